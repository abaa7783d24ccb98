import { z } from 'zod';
import { MAX_DOCUMENT_DEPTH, OtlpPayloadError } from './otlp-rows';

/**
 * An ingest body as a document (CONTRACT §4.2), pure: made storable, depth-checked, and checked
 * against the shapes we accept — OTLP JSON (camelCase or snake_case keys, the shape our protobuf
 * decoder also produces) or the simplified `{"spans": […]}` / `{"logs": […]}` forms.
 */

// ---------------------------------------------------------------------------------------------
// Document hygiene

// eslint-disable-next-line no-control-regex -- finding NUL is the point
const UNSTORABLE_CHARS = /[\u0000\ud800-\udfff]/;

/**
 * Postgres rejects NUL in text and lone UTF-16 surrogates in jsonb; a single such character
 * would fail the whole batch, so both become U+FFFD.
 */
export function storableString(s: string): string {
  if (!UNSTORABLE_CHARS.test(s)) return s;
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const code = s.charCodeAt(i);
    if (code === 0) {
      out += '\ufffd';
    } else if (code >= 0xd800 && code <= 0xdbff) {
      const next = s.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        out += s.charAt(i) + s.charAt(i + 1);
        i++;
      } else {
        out += '\ufffd';
      }
    } else if (code >= 0xdc00 && code <= 0xdfff) {
      out += '\ufffd';
    } else {
      out += s.charAt(i);
    }
  }
  return out;
}

/**
 * Makes a parsed JSON document storable in place (strings and keys via storableString) and
 * rejects nesting deeper than `maxDepth`. Iterative: a hostile 10^6-deep array cannot overflow
 * the stack here.
 */
export function sanitizeDocument(doc: unknown, maxDepth = MAX_DOCUMENT_DEPTH): unknown {
  if (typeof doc === 'string') return storableString(doc);
  if (typeof doc !== 'object' || doc === null) return doc;
  const stack: Array<{ node: object; depth: number }> = [{ node: doc, depth: 1 }];
  while (stack.length > 0) {
    const { node, depth } = stack.pop() as { node: object; depth: number };
    if (depth > maxDepth) throw new OtlpPayloadError(`document nested deeper than ${maxDepth} levels`);
    if (Array.isArray(node)) {
      for (let i = 0; i < node.length; i++) {
        const item: unknown = node[i];
        if (typeof item === 'string') node[i] = storableString(item);
        else if (typeof item === 'object' && item !== null) stack.push({ node: item, depth: depth + 1 });
      }
      continue;
    }
    const record = node as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      const item = record[key];
      let target = key;
      if (UNSTORABLE_CHARS.test(key)) {
        target = storableString(key);
        delete record[key];
        record[target] = item;
      }
      if (typeof item === 'string') record[target] = storableString(item);
      else if (typeof item === 'object' && item !== null) stack.push({ node: item, depth: depth + 1 });
    }
  }
  return doc;
}

// ---------------------------------------------------------------------------------------------
// Accepted document shapes (OTLP JSON, both key spellings; simplified forms). Loose objects: unknown
// keys are kept (they end up in `raw`), known keys must have the right type.

const numberOrString = z.union([z.number(), z.string()]);
const optionalString = z.string().nullish();
const optionalNumberish = numberOrString.nullish();

/**
 * Attribute values (OTLP AnyValue, recursive) are checked by decodeAnyValue itself, not by zod:
 * zod's recursive schemas made a 1000-span request four times slower to validate.
 */
const attributeListSchema = z.array(z.unknown()).nullish();

const resourceSchema = z.looseObject({ attributes: attributeListSchema }).nullish();
const scopeSchema = z
  .looseObject({ name: optionalString, version: optionalString, attributes: attributeListSchema })
  .nullish();

const otlpSpanSchema = z.looseObject({
  traceId: optionalString,
  trace_id: optionalString,
  spanId: optionalString,
  span_id: optionalString,
  parentSpanId: optionalString,
  parent_span_id: optionalString,
  name: optionalString,
  startTimeUnixNano: optionalNumberish,
  start_time_unix_nano: optionalNumberish,
  endTimeUnixNano: optionalNumberish,
  end_time_unix_nano: optionalNumberish,
  attributes: attributeListSchema,
  status: z.looseObject({ code: optionalNumberish, message: optionalString }).nullish(),
});
const scopeSpansSchema = z.looseObject({
  scope: scopeSchema,
  instrumentationLibrary: scopeSchema,
  instrumentation_library: scopeSchema,
  spans: z.array(otlpSpanSchema).nullish(),
});
const scopeSpansListSchema = z.array(scopeSpansSchema).nullish();
const resourceSpansSchema = z.looseObject({
  resource: resourceSchema,
  scopeSpans: scopeSpansListSchema,
  scope_spans: scopeSpansListSchema,
  instrumentationLibrarySpans: scopeSpansListSchema,
  instrumentation_library_spans: scopeSpansListSchema,
});

const otlpLogSchema = z.looseObject({
  traceId: optionalString,
  trace_id: optionalString,
  spanId: optionalString,
  span_id: optionalString,
  timeUnixNano: optionalNumberish,
  time_unix_nano: optionalNumberish,
  observedTimeUnixNano: optionalNumberish,
  observed_time_unix_nano: optionalNumberish,
  severityText: optionalString,
  severity_text: optionalString,
  severityNumber: optionalNumberish,
  severity_number: optionalNumberish,
  body: z.unknown().optional(),
  attributes: attributeListSchema,
  flags: optionalNumberish,
  droppedAttributesCount: optionalNumberish,
  dropped_attributes_count: optionalNumberish,
});
const logRecordListSchema = z.array(otlpLogSchema).nullish();
const scopeLogsSchema = z.looseObject({
  scope: scopeSchema,
  instrumentationLibrary: scopeSchema,
  instrumentation_library: scopeSchema,
  logRecords: logRecordListSchema,
  log_records: logRecordListSchema,
});
const scopeLogsListSchema = z.array(scopeLogsSchema).nullish();
const resourceLogsSchema = z.looseObject({
  resource: resourceSchema,
  scopeLogs: scopeLogsListSchema,
  scope_logs: scopeLogsListSchema,
  instrumentationLibraryLogs: scopeLogsListSchema,
  instrumentation_library_logs: scopeLogsListSchema,
});

const flatAttributes = z.record(z.string(), z.unknown()).nullish();
const correlationId = numberOrString.nullish();

export const simplifiedSpanSchema = z.looseObject({
  trace_id: optionalString,
  traceId: optionalString,
  span_id: optionalString,
  spanId: optionalString,
  parent_span_id: optionalString,
  parentSpanId: optionalString,
  name: optionalString,
  service_name: optionalString,
  start_time: optionalString,
  startTime: optionalString,
  end_time: optionalString,
  endTime: optionalString,
  status: z.unknown().optional(),
  attributes: flatAttributes,
  events: z.unknown().optional(),
  run_case_id: correlationId,
  experiment_id: correlationId,
});

export const simplifiedLogSchema = z.looseObject({
  trace_id: optionalString,
  span_id: optionalString,
  service_name: optionalString,
  severity_text: optionalString,
  severity_number: optionalNumberish,
  body: z.unknown().optional(),
  attributes: flatAttributes,
  resource_attributes: flatAttributes,
  scope_attributes: flatAttributes,
  scope_name: optionalString,
  scope_version: optionalString,
  flags: optionalNumberish,
  dropped_attributes_count: optionalNumberish,
  event_time: optionalString,
  observed_time: optionalString,
  run_case_id: correlationId,
  experiment_id: correlationId,
});

export const tracesDocumentSchema = z.looseObject({
  resourceSpans: z.array(resourceSpansSchema).nullish(),
  resource_spans: z.array(resourceSpansSchema).nullish(),
  spans: z.unknown().optional(),
});
export const logsDocumentSchema = z.looseObject({
  resourceLogs: z.array(resourceLogsSchema).nullish(),
  resource_logs: z.array(resourceLogsSchema).nullish(),
  logs: z.unknown().optional(),
});

export function parseWith<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const where = issue && issue.path.length > 0 ? issue.path.map(String).join('.') : '(root)';
  throw new OtlpPayloadError(`invalid ${what} at ${where}: ${issue?.message ?? 'malformed'}`);
}

export function asDocument(payload: unknown): Record<string, unknown> {
  if (payload === null || payload === undefined) return {};
  if (typeof payload !== 'object' || Array.isArray(payload)) {
    throw new OtlpPayloadError('body must be a JSON object');
  }
  return payload as Record<string, unknown>;
}
