import { z } from 'zod';
import { REDACTED, redactSecrets } from './runtime-snapshot';

/**
 * OpenTelemetry ingest and trajectory mapping (CONTRACT §4.2, §4.4), pure.
 *
 * Ingest: an OTLP JSON document (camelCase or snake_case keys, the shape our protobuf decoder also
 * produces) or the simplified `{"spans": […]}` / `{"logs": […]}` forms → `otel_traces` / `otel_logs`
 * row objects whose keys are the column names. Every value a row builder emits is storable as is:
 * strings carry no NUL or lone surrogate, integers fit their columns, timestamps are valid ISO-8601.
 * Mapping: stored rows → the run case's `agent_trajectory` steps.
 */

// ---------------------------------------------------------------------------------------------
// Row shapes

export type OtelSignal = 'traces' | 'logs';
export type AttributeMap = Record<string, unknown>;

export interface SpanRow {
  trace_id: string | null;
  span_id: string | null;
  parent_span_id: string | null;
  name: string;
  service_name: string;
  status: string | null;
  attributes: AttributeMap;
  resource_attributes: AttributeMap;
  scope_attributes: AttributeMap;
  scope_name: string | null;
  scope_version: string | null;
  /** ISO-8601 UTC with microseconds. */
  start_time: string | null;
  end_time: string | null;
  run_case_id: number | null;
  experiment_id: number | null;
  raw: unknown;
}

export interface LogRow {
  trace_id: string | null;
  span_id: string | null;
  service_name: string;
  severity_text: string | null;
  severity_number: number | null;
  body_text: string | null;
  /** JSON null (not SQL NULL) when the body is absent or a string. */
  body_json: unknown;
  attributes: AttributeMap;
  resource_attributes: AttributeMap;
  scope_attributes: AttributeMap;
  scope_name: string | null;
  scope_version: string | null;
  flags: number | null;
  dropped_attributes_count: number | null;
  event_time: string | null;
  observed_time: string | null;
  run_case_id: number | null;
  experiment_id: number | null;
  raw: unknown;
}

/** The case a per-case ingest token stands for. */
export interface CaseAttribution {
  runCaseId: number;
  experimentId: number;
  dataItemId: number;
}

/** A body that is not an OTLP/simplified document; the message says where and why. */
export class OtlpPayloadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OtlpPayloadError';
  }
}

export const DEFAULT_SERVICE_NAME = 'benchmark-agent';
export const RUN_CASE_ID_KEY = 'benchmark.run_case_id';
export const EXPERIMENT_ID_KEY = 'benchmark.experiment_id';
export const DATA_ITEM_ID_KEY = 'benchmark.data_item_id';
const SERVICE_NAME_KEY = 'service.name';

/** Nesting a JSON body may have; OTLP needs ~4 levels per kvlist level, Postgres' jsonb parser has a stack limit. */
export const MAX_DOCUMENT_DEPTH = 128;

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

const simplifiedSpanSchema = z.looseObject({
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

const simplifiedLogSchema = z.looseObject({
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

const tracesDocumentSchema = z.looseObject({
  resourceSpans: z.array(resourceSpansSchema).nullish(),
  resource_spans: z.array(resourceSpansSchema).nullish(),
  spans: z.unknown().optional(),
});
const logsDocumentSchema = z.looseObject({
  resourceLogs: z.array(resourceLogsSchema).nullish(),
  resource_logs: z.array(resourceLogsSchema).nullish(),
  logs: z.unknown().optional(),
});

function parseWith<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const where = issue && issue.path.length > 0 ? issue.path.map(String).join('.') : '(root)';
  throw new OtlpPayloadError(`invalid ${what} at ${where}: ${issue?.message ?? 'malformed'}`);
}

function asDocument(payload: unknown): Record<string, unknown> {
  if (payload === null || payload === undefined) return {};
  if (typeof payload !== 'object' || Array.isArray(payload)) {
    throw new OtlpPayloadError('body must be a JSON object');
  }
  return payload as Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------
// Scalars

/** The first value that is neither null nor undefined (camelCase and snake_case spellings of one field). */
function first<T>(...values: Array<T | null | undefined>): T | undefined {
  for (const v of values) if (v !== null && v !== undefined) return v;
  return undefined;
}

const HEX_ID = /^[0-9a-fA-F]+$/;
const BASE64_ID = /^[A-Za-z0-9+/_-]+={0,2}$/;
const BASE64_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

function base64ToHex(s: string): string | null {
  const clean = s.replace(/=+$/, '').replace(/-/g, '+').replace(/_/g, '/');
  let bits = 0;
  let value = 0;
  let hex = '';
  for (const ch of clean) {
    const index = BASE64_ALPHABET.indexOf(ch);
    if (index < 0) return null;
    value = (value << 6) | index;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      hex += ((value >> bits) & 0xff).toString(16).padStart(2, '0');
    }
  }
  return hex;
}

/**
 * Trace/span ids as lowercase hex. OTLP JSON says hex; clients built on protobuf's JSON mapping
 * send base64, which is recognisable because it decodes to exactly the id's byte length (a hex
 * id never does). Anything else is kept as sent (trimmed); blank → null.
 */
export function normalizeId(value: unknown, byteLength: 8 | 16): string | null {
  if (typeof value !== 'string') return null;
  const id = value.trim();
  if (id === '') return null;
  if (id.length === byteLength * 2 && HEX_ID.test(id)) return id.toLowerCase();
  if (BASE64_ID.test(id)) {
    const hex = base64ToHex(id);
    if (hex !== null && hex.length === byteLength * 2) return hex;
  }
  return id;
}

const UNIX_NANOS = /^\d{1,30}$/;
const LEADING_ZEROS = /^0+/;
/** 9999-12-31T23:59:59.999Z: beyond it an ISO year has five digits, which Postgres would not read back. */
const MAX_EPOCH_MS = 253402300799999;
const MAX_UNIX_NANOS_DIGITS = 21;

/** ISO-8601 UTC with microseconds from epoch nanoseconds (string, number); ≤0 or invalid → null. */
export function isoFromUnixNanos(value: unknown): string | null {
  let digits: string;
  if (typeof value === 'string') {
    digits = value.trim();
    if (!UNIX_NANOS.test(digits)) return null;
  } else if (typeof value === 'number') {
    if (!Number.isFinite(value) || value <= 0) return null;
    digits = BigInt(Math.trunc(value)).toString();
  } else {
    return null;
  }
  digits = digits.replace(LEADING_ZEROS, '');
  if (digits === '' || digits.length > MAX_UNIX_NANOS_DIGITS) return null;
  // Plain string arithmetic: nanoseconds exceed 2^53, seconds do not.
  const seconds = digits.length > 9 ? Number(digits.slice(0, -9)) : 0;
  const micros = digits.padStart(9, '0').slice(-9, -3);
  if (seconds * 1000 > MAX_EPOCH_MS) return null;
  return `${isoSecond(seconds)}.${micros}Z`;
}

/** `YYYY-MM-DDTHH:MM:SS` of an epoch second; the spans of a request mostly share a few seconds. */
let lastSecond = -1;
let lastSecondIso = '';
function isoSecond(seconds: number): string {
  if (seconds !== lastSecond) {
    lastSecond = seconds;
    lastSecondIso = new Date(seconds * 1000).toISOString().slice(0, 19);
  }
  return lastSecondIso;
}

function isoFromMicros(micros: bigint): string {
  const ms = Number(micros / 1000n);
  const subMs = Number(micros % 1000n);
  return `${new Date(ms).toISOString().slice(0, 23)}${String(subMs).padStart(3, '0')}Z`;
}

const ISO_TIMESTAMP =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?$/;

/** An ISO-8601 string (`Z` or offset accepted, naive = UTC) → normalized UTC ISO; invalid → null. */
export function normalizeIsoTimestamp(value: unknown): string | null {
  if (typeof value !== 'string') return null;
  const m = ISO_TIMESTAMP.exec(value.trim());
  if (!m) return null;
  const [, y, mo, d, h = '0', mi = '0', s = '0', fraction = '', zone] = m;
  const year = Number(y);
  const month = Number(mo);
  const day = Number(d);
  const hour = Number(h);
  const minute = Number(mi);
  const second = Number(s);
  const base = Date.UTC(year, month - 1, day, hour, minute, second);
  const check = new Date(base);
  if (
    year < 1 ||
    check.getUTCFullYear() !== year ||
    check.getUTCMonth() !== month - 1 ||
    check.getUTCDate() !== day ||
    check.getUTCHours() !== hour ||
    check.getUTCMinutes() !== minute ||
    check.getUTCSeconds() !== second
  ) {
    return null;
  }
  let offsetMinutes = 0;
  if (zone && zone !== 'Z' && zone !== 'z') {
    const sign = zone.startsWith('-') ? -1 : 1;
    const digits = zone.slice(1).replace(':', '');
    const oh = Number(digits.slice(0, 2));
    const om = digits.length > 2 ? Number(digits.slice(2, 4)) : 0;
    if (oh > 23 || om > 59) return null;
    offsetMinutes = sign * (oh * 60 + om);
  }
  const micros = BigInt(base - offsetMinutes * 60_000) * 1000n + BigInt(fraction.padEnd(6, '0').slice(0, 6));
  if (micros <= 0n) return null;
  return isoFromMicros(micros);
}

const INT32_MAX = 2_147_483_647;
const DECIMAL_INT = /^\s*[+-]?\d+\s*$/;

/** An OTLP integer (number or decimal string) as a JS number; null when absent or not an integer. */
function integerOf(value: unknown): number | null {
  if (typeof value === 'number') return Number.isFinite(value) ? Math.trunc(value) : null;
  if (typeof value === 'string' && DECIMAL_INT.test(value)) return Number(value);
  return null;
}

/** For INT columns: in range or null. */
function int32OrNull(value: unknown): number | null {
  const n = integerOf(value);
  return n !== null && n >= -INT32_MAX - 1 && n <= INT32_MAX ? n : null;
}

/** flags is an unsigned 32-bit field in an INT column: keep the bit pattern. */
function flagsOrNull(value: unknown): number | null {
  const n = integerOf(value);
  return n !== null && n >= 0 && n <= 0xffffffff ? n | 0 : null;
}

/** dropped_attributes_count is uint32; an INT column saturates. */
function countOrNull(value: unknown): number | null {
  const n = integerOf(value);
  return n !== null && n >= 0 ? Math.min(n, INT32_MAX) : null;
}

const SEVERITY_NAMES = [
  'UNSPECIFIED',
  'TRACE',
  'TRACE2',
  'TRACE3',
  'TRACE4',
  'DEBUG',
  'DEBUG2',
  'DEBUG3',
  'DEBUG4',
  'INFO',
  'INFO2',
  'INFO3',
  'INFO4',
  'WARN',
  'WARN2',
  'WARN3',
  'WARN4',
  'ERROR',
  'ERROR2',
  'ERROR3',
  'ERROR4',
  'FATAL',
  'FATAL2',
  'FATAL3',
  'FATAL4',
];

/** Integer, or the enum name protobuf-JSON clients send (`SEVERITY_NUMBER_INFO`). */
function severityNumberOf(value: unknown): number | null {
  if (typeof value === 'string' && value.startsWith('SEVERITY_NUMBER_')) {
    const index = SEVERITY_NAMES.indexOf(value.slice('SEVERITY_NUMBER_'.length));
    return index >= 0 ? index : null;
  }
  return int32OrNull(value);
}

/** Python truthiness, which the original's "first of" rules use. */
function truthy(value: unknown): boolean {
  if (value === null || value === undefined || value === false || value === 0 || value === '') return false;
  if (Array.isArray(value)) return value.length > 0;
  if (typeof value === 'object') return Object.keys(value).length > 0;
  return true;
}

function firstTruthy(...values: unknown[]): unknown {
  for (const v of values) if (truthy(v)) return v;
  return undefined;
}

/** Python `int(v)` for a correlation id, limited to what a BIGINT and a JS number both hold. */
function correlationIdOf(value: unknown): number | null {
  const n = integerOf(value);
  return n !== null && Number.isSafeInteger(n) ? n : null;
}

function textOrNull(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return null;
}

/** OTLP status: `code`, else `message`, stringified (JSON clients send 1/2, enum-name clients STATUS_CODE_*). */
function statusOf(status: unknown): string | null {
  if (status === null || status === undefined) return null;
  if (typeof status !== 'object' || Array.isArray(status)) return truthy(status) ? textOrNull(status) : null;
  const { code, message } = status as { code?: unknown; message?: unknown };
  const picked = firstTruthy(code, message);
  return picked === undefined ? null : textOrNull(picked);
}

// ---------------------------------------------------------------------------------------------
// Attributes

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `value[camel] ?? value[snake]`, which must be of the expected type when present. */
function member<T>(
  value: Record<string, unknown>,
  camel: string,
  snake: string,
  is: (v: unknown) => v is T,
  what: string,
): T | undefined {
  const v = value[camel] ?? value[snake];
  if (v === undefined || v === null) return undefined;
  if (!is(v)) throw new OtlpPayloadError(`${camel} must be ${what}`);
  return v;
}

const isString = (v: unknown): v is string => typeof v === 'string';
const isNumberish = (v: unknown): v is number | string => typeof v === 'number' || typeof v === 'string';
const isBoolean = (v: unknown): v is boolean => typeof v === 'boolean';
const isValues = (v: unknown): v is { values?: unknown } =>
  isRecord(v) && (v.values === undefined || v.values === null || Array.isArray(v.values));

/** OTLP AnyValue → plain JSON value (CONTRACT §4.2); an empty AnyValue is null. */
export function decodeAnyValue(value: unknown): unknown {
  if (value === null || value === undefined) return null;
  if (!isRecord(value)) throw new OtlpPayloadError('an attribute value must be an AnyValue object');
  const str = member(value, 'stringValue', 'string_value', isString, 'a string');
  if (str !== undefined) return str;
  const int = member(value, 'intValue', 'int_value', isNumberish, 'an integer');
  if (int !== undefined) {
    const n = integerOf(int);
    if (n === null) throw new OtlpPayloadError('intValue must be an integer');
    // Beyond 2^53 a JS number would silently change the value; the decimal string does not.
    return Number.isSafeInteger(n) ? n : String(int).trim();
  }
  const dbl = member(value, 'doubleValue', 'double_value', isNumberish, 'a number');
  if (dbl !== undefined) {
    if (typeof dbl === 'number') return dbl;
    const n = Number(dbl);
    // protobuf's JSON mapping spells non-finite doubles "NaN", "Infinity", "-Infinity": kept as sent.
    return Number.isFinite(n) ? n : dbl;
  }
  const bool = member(value, 'boolValue', 'bool_value', isBoolean, 'a boolean');
  if (bool !== undefined) return bool;
  const array = member(value, 'arrayValue', 'array_value', isValues, 'an object with a values array');
  if (array !== undefined)
    return ((array.values as unknown[] | null | undefined) ?? []).map((item) => decodeAnyValue(item));
  const kvlist = member(value, 'kvlistValue', 'kvlist_value', isValues, 'an object with a values array');
  if (kvlist !== undefined) return decodeAttributes(kvlist.values as unknown[] | null | undefined);
  const bytes = member(value, 'bytesValue', 'bytes_value', isString, 'a base64 string');
  if (bytes !== undefined) return bytes;
  return null;
}

/** OTLP KeyValue list → object; blank keys are skipped. */
export function decodeAttributes(list: readonly unknown[] | null | undefined): AttributeMap {
  const out: AttributeMap = {};
  if (!list) return out;
  for (const kv of list) {
    if (!isRecord(kv)) throw new OtlpPayloadError('an attribute must be a {key, value} object');
    const key = kv.key;
    if (key !== undefined && key !== null && typeof key !== 'string') {
      throw new OtlpPayloadError('an attribute key must be a string');
    }
    if (typeof key !== 'string' || key.trim() === '') continue;
    try {
      out[key] = decodeAnyValue(kv.value);
    } catch (err) {
      if (err instanceof OtlpPayloadError) throw new OtlpPayloadError(`attribute "${key}": ${err.message}`);
      throw err;
    }
  }
  return out;
}

/**
 * redactSecrets on the decoded map, mirrored into the record's own KeyValue list so `raw` does not
 * keep what `attributes` hides.
 */
function redactedRecord<T extends { attributes?: unknown[] | null }>(
  record: T,
  decoded: AttributeMap,
): { attributes: AttributeMap; raw: T } {
  const attributes = redactSecrets(decoded);
  const hidden = Object.keys(attributes).filter((k) => attributes[k] === REDACTED && decoded[k] !== REDACTED);
  if (hidden.length === 0 || !record.attributes) return { attributes, raw: record };
  const raw = {
    ...record,
    attributes: record.attributes.map((kv) =>
      isRecord(kv) && typeof kv.key === 'string' && hidden.includes(kv.key)
        ? { ...kv, value: { stringValue: REDACTED } }
        : kv,
    ),
  };
  return { attributes, raw };
}

// ---------------------------------------------------------------------------------------------
// Correlation

type Headers = Record<string, string | string[] | undefined>;

const CORRELATION_HEADERS: ReadonlyArray<readonly [string, readonly string[]]> = [
  [RUN_CASE_ID_KEY, ['x-benchmark-run-case-id', 'x-run-case-id']],
  [DATA_ITEM_ID_KEY, ['x-benchmark-data-item-id', 'x-data-item-id']],
  [EXPERIMENT_ID_KEY, ['x-benchmark-experiment-id', 'x-experiment-id']],
];

/** CONTRACT §4.2 header-derived correlation: `x-benchmark-*` headers → attribute values (strings). */
export function correlationFromHeaders(headers: Headers): Record<string, string> {
  const lower: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    const text = Array.isArray(value) ? value[0] : value;
    if (typeof text === 'string' && text.trim() !== '')
      lower[name.toLowerCase()] = storableString(text.trim());
  }
  const extras: Record<string, string> = {};
  for (const [key, names] of CORRELATION_HEADERS) {
    const found = names.map((n) => lower[n]).find((v) => v !== undefined);
    if (found !== undefined) extras[key] = found;
  }
  return extras;
}

/** Extras never override: added only when neither the record nor its resource has the key. */
function withExtras(
  attributes: AttributeMap,
  resource: AttributeMap,
  extras: Record<string, string>,
): AttributeMap {
  for (const [key, value] of Object.entries(extras)) {
    if (!(key in attributes) && !(key in resource)) attributes[key] = value;
  }
  return attributes;
}

function correlation(
  itemValue: unknown,
  attributes: AttributeMap,
  resource: AttributeMap,
  key: string,
): number | null {
  const picked = firstTruthy(itemValue, attributes[key], resource[key]);
  return picked === undefined ? null : correlationIdOf(picked);
}

/**
 * Rows posted with a case's ingest token belong to that case whatever they claim: the correlation
 * attributes and columns are overwritten (and added where missing).
 */
export function attributeToCase<T extends SpanRow | LogRow>(rows: T[], c: CaseAttribution): T[] {
  const claims: Record<string, string> = {
    [RUN_CASE_ID_KEY]: String(c.runCaseId),
    [EXPERIMENT_ID_KEY]: String(c.experimentId),
    [DATA_ITEM_ID_KEY]: String(c.dataItemId),
  };
  return rows.map((row) => {
    const resource: AttributeMap = Object.assign({}, row.resource_attributes);
    for (const key of Object.keys(claims)) if (key in resource) resource[key] = claims[key];
    return Object.assign({}, row, {
      attributes: mergedAttributes(row.attributes, claims),
      resource_attributes: resource,
      run_case_id: c.runCaseId,
      experiment_id: c.experimentId,
    });
  });
}

/**
 * `{...base, ...overlay}` as Object.assign: V8's spread of a dozen dotted keys builds a slow
 * object, which made flattening 1000 spans 60% slower and their JSON encoding slower too.
 */
function mergedAttributes(base: AttributeMap, overlay: AttributeMap): AttributeMap {
  return Object.assign({}, base, overlay);
}

// ---------------------------------------------------------------------------------------------
// Spans

function serviceNameOf(...candidates: unknown[]): string {
  const picked = firstTruthy(...candidates);
  return picked === undefined ? DEFAULT_SERVICE_NAME : (textOrNull(picked) ?? DEFAULT_SERVICE_NAME);
}

/** OTLP traces or the simplified `{"spans": […]}` form → otel_traces rows. */
export function flattenSpans(payload: unknown, extras: Record<string, string> = {}): SpanRow[] {
  const doc = parseWith(tracesDocumentSchema, asDocument(payload), 'traces document');
  const rows: SpanRow[] = [];
  const resourceSpansList = first(doc.resourceSpans, doc.resource_spans) ?? [];
  for (const resourceSpans of resourceSpansList) {
    const resource = redactSecrets(decodeAttributes(resourceSpans.resource?.attributes));
    const scopeGroups = [
      ...(resourceSpans.scopeSpans ?? []),
      ...(resourceSpans.scope_spans ?? []),
      ...(resourceSpans.instrumentationLibrarySpans ?? []),
      ...(resourceSpans.instrumentation_library_spans ?? []),
    ];
    for (const group of scopeGroups) {
      const scope = first(group.scope, group.instrumentationLibrary, group.instrumentation_library);
      const scopeAttributes = redactSecrets(decodeAttributes(scope?.attributes));
      for (const span of group.spans ?? []) {
        const own = redactedRecord(span, decodeAttributes(span.attributes));
        const attributes = mergedAttributes(resource, own.attributes);
        const serviceName = serviceNameOf(attributes[SERVICE_NAME_KEY], resource[SERVICE_NAME_KEY]);
        if (!(SERVICE_NAME_KEY in attributes)) attributes[SERVICE_NAME_KEY] = serviceName;
        withExtras(attributes, resource, extras);
        rows.push({
          trace_id: normalizeId(first(span.traceId, span.trace_id), 16),
          span_id: normalizeId(first(span.spanId, span.span_id), 8),
          parent_span_id: normalizeId(first(span.parentSpanId, span.parent_span_id), 8),
          name: truthy(span.name) ? (span.name as string) : 'unnamed-span',
          service_name: serviceName,
          status: statusOf(span.status),
          attributes,
          resource_attributes: resource,
          scope_attributes: scopeAttributes,
          scope_name: scope?.name ?? null,
          scope_version: scope?.version ?? null,
          start_time: isoFromUnixNanos(first(span.startTimeUnixNano, span.start_time_unix_nano)),
          end_time: isoFromUnixNanos(first(span.endTimeUnixNano, span.end_time_unix_nano)),
          run_case_id: correlation(undefined, attributes, resource, RUN_CASE_ID_KEY),
          experiment_id: correlation(undefined, attributes, resource, EXPERIMENT_ID_KEY),
          raw: own.raw,
        });
      }
    }
  }
  if (rows.length > 0 || doc.spans === undefined || doc.spans === null) return rows;
  return flattenSimplifiedSpans(doc.spans, extras);
}

function flattenSimplifiedSpans(spans: unknown, extras: Record<string, string>): SpanRow[] {
  const items = parseWith(z.array(simplifiedSpanSchema), spans, 'spans');
  return items.map((item) => {
    const attributes = withExtras(redactSecrets({ ...(item.attributes ?? {}) }), {}, extras);
    return {
      trace_id: normalizeId(first(item.trace_id, item.traceId), 16),
      span_id: normalizeId(first(item.span_id, item.spanId), 8),
      parent_span_id: normalizeId(first(item.parent_span_id, item.parentSpanId), 8),
      name: truthy(item.name) ? (item.name as string) : 'unnamed-span',
      service_name: serviceNameOf(attributes[SERVICE_NAME_KEY], item.service_name),
      status: statusOf(item.status),
      attributes,
      resource_attributes: {},
      scope_attributes: {},
      scope_name: null,
      scope_version: null,
      start_time: normalizeIsoTimestamp(first(item.start_time, item.startTime)),
      end_time: normalizeIsoTimestamp(first(item.end_time, item.endTime)),
      run_case_id: correlation(item.run_case_id, attributes, {}, RUN_CASE_ID_KEY),
      experiment_id: correlation(item.experiment_id, attributes, {}, EXPERIMENT_ID_KEY),
      raw: redactSecrets(item),
    };
  });
}

// ---------------------------------------------------------------------------------------------
// Logs

/** string → body_text; null → neither; anything else → body_json and its JSON text. */
function otlpBody(value: unknown): { body_text: string | null; body_json: unknown } {
  if (value === null || value === undefined) return { body_text: null, body_json: null };
  if (typeof value === 'string') return { body_text: value, body_json: null };
  return { body_text: JSON.stringify(value), body_json: value };
}

/** OTLP logs or the simplified `{"logs": […]}` form → otel_logs rows. */
export function flattenLogs(payload: unknown, extras: Record<string, string> = {}): LogRow[] {
  const doc = parseWith(logsDocumentSchema, asDocument(payload), 'logs document');
  const rows: LogRow[] = [];
  const resourceLogsList = first(doc.resourceLogs, doc.resource_logs) ?? [];
  for (const resourceLogs of resourceLogsList) {
    const resource = redactSecrets(decodeAttributes(resourceLogs.resource?.attributes));
    const scopeGroups = [
      ...(resourceLogs.scopeLogs ?? []),
      ...(resourceLogs.scope_logs ?? []),
      ...(resourceLogs.instrumentationLibraryLogs ?? []),
      ...(resourceLogs.instrumentation_library_logs ?? []),
    ];
    for (const group of scopeGroups) {
      const scope = first(group.scope, group.instrumentationLibrary, group.instrumentation_library);
      const scopeAttributes = redactSecrets(decodeAttributes(scope?.attributes));
      for (const record of [...(group.logRecords ?? []), ...(group.log_records ?? [])]) {
        const own = redactedRecord(record, decodeAttributes(record.attributes));
        const attributes = mergedAttributes(resource, own.attributes);
        // Resource first for logs, unlike spans (CONTRACT §4.2; kept for compatibility).
        const serviceName = serviceNameOf(resource[SERVICE_NAME_KEY], attributes[SERVICE_NAME_KEY]);
        if (!(SERVICE_NAME_KEY in attributes)) attributes[SERVICE_NAME_KEY] = serviceName;
        withExtras(attributes, resource, extras);
        rows.push({
          trace_id: normalizeId(first(record.traceId, record.trace_id), 16),
          span_id: normalizeId(first(record.spanId, record.span_id), 8),
          service_name: serviceName,
          severity_text: first(record.severityText, record.severity_text) ?? null,
          severity_number: severityNumberOf(first(record.severityNumber, record.severity_number)),
          ...otlpBody(redactSecrets(decodeAnyValue(record.body))),
          attributes,
          resource_attributes: resource,
          scope_attributes: scopeAttributes,
          scope_name: scope?.name ?? null,
          scope_version: scope?.version ?? null,
          flags: flagsOrNull(record.flags),
          dropped_attributes_count: countOrNull(
            first(record.droppedAttributesCount, record.dropped_attributes_count),
          ),
          event_time: isoFromUnixNanos(first(record.timeUnixNano, record.time_unix_nano)),
          observed_time: isoFromUnixNanos(first(record.observedTimeUnixNano, record.observed_time_unix_nano)),
          run_case_id: correlation(undefined, attributes, resource, RUN_CASE_ID_KEY),
          experiment_id: correlation(undefined, attributes, resource, EXPERIMENT_ID_KEY),
          raw: own.raw,
        });
      }
    }
  }
  if (rows.length > 0 || doc.logs === undefined || doc.logs === null) return rows;
  return flattenSimplifiedLogs(doc.logs, extras);
}

function flattenSimplifiedLogs(logs: unknown, extras: Record<string, string>): LogRow[] {
  const items = parseWith(z.array(simplifiedLogSchema), logs, 'logs');
  return items.map((item) => {
    const resource = redactSecrets({ ...(item.resource_attributes ?? {}) });
    const attributes = withExtras(redactSecrets({ ...(item.attributes ?? {}) }), resource, extras);
    const body: unknown = redactSecrets(item.body);
    return {
      trace_id: normalizeId(item.trace_id, 16),
      span_id: normalizeId(item.span_id, 8),
      service_name: serviceNameOf(
        item.service_name,
        attributes[SERVICE_NAME_KEY],
        resource[SERVICE_NAME_KEY],
      ),
      severity_text: item.severity_text ?? null,
      severity_number: severityNumberOf(item.severity_number),
      body_text: typeof body === 'string' ? body : null,
      body_json: typeof body === 'string' || body === undefined ? null : body,
      attributes,
      resource_attributes: resource,
      scope_attributes: redactSecrets({ ...(item.scope_attributes ?? {}) }),
      scope_name: item.scope_name ?? null,
      scope_version: item.scope_version ?? null,
      flags: flagsOrNull(item.flags),
      dropped_attributes_count: countOrNull(item.dropped_attributes_count),
      event_time: normalizeIsoTimestamp(item.event_time),
      observed_time: normalizeIsoTimestamp(item.observed_time),
      run_case_id: correlation(item.run_case_id, attributes, resource, RUN_CASE_ID_KEY),
      experiment_id: correlation(item.experiment_id, attributes, resource, EXPERIMENT_ID_KEY),
      raw: redactSecrets(item),
    };
  });
}

// ---------------------------------------------------------------------------------------------
// Signal

const SIGNAL_BY_PATH: Readonly<Record<string, OtelSignal>> = {
  '/api/otel/v1/traces': 'traces',
  '/api/otel/v1/logs': 'logs',
  '/v1/traces': 'traces',
  '/v1/logs': 'logs',
};

/** The ingest paths (the platform's and the OTLP/HTTP default ones); anything else is not ours. */
export function signalForPath(path: string): OtelSignal | null {
  return SIGNAL_BY_PATH[path] ?? null;
}

// ---------------------------------------------------------------------------------------------
// Trajectory (CONTRACT §4.4)

export const PICKED_ATTRIBUTE_KEYS = [
  'tool.name',
  'tool',
  'model',
  'model.name',
  'http.method',
  'http.url',
  'http.status_code',
  'db.system',
  'db.operation',
  'benchmark.run_case_id',
  'benchmark.data_item_id',
  'query',
  'results',
  'path',
  'content_preview',
  'final_answer',
] as const;

/** Picked attributes that a log step repeats inside its event, in this order. */
const LOG_EVENT_KEYS = ['query', 'results', 'path', 'content_preview', 'final_answer'] as const;

/**
 * Columns of a stored otel_traces row that the mapping reads. Timestamps as Dates (pg's default)
 * or ISO strings; strings may carry the microseconds that order spans within a millisecond.
 */
export interface StoredSpan {
  span_id: string | null;
  parent_span_id: string | null;
  name: string | null;
  status: string | null;
  attributes: unknown;
  start_time: Date | string | null;
  end_time: Date | string | null;
  created_at: Date | string | null;
  raw: unknown;
}

export interface StoredLog {
  trace_id: string | null;
  span_id: string | null;
  service_name: string | null;
  severity_text: string | null;
  body_text: string | null;
  body_json: unknown;
  attributes: unknown;
  event_time: Date | string | null;
  observed_time: Date | string | null;
  created_at: Date | string | null;
}

export interface SpanStep {
  step: number;
  span_id: string | null;
  parent_span_id: string | null;
  name: string;
  start_time_ms: number;
  end_time_ms: number;
  latency_ms: number;
  status: string | null;
  attributes: AttributeMap;
  events: unknown[];
}

export interface LogStep {
  step: number;
  source: 'otel.log';
  trace_id: string | null;
  span_id: string | null;
  name: string;
  start_time_ms: number;
  end_time_ms: number;
  latency_ms: 0;
  status: string | null;
  attributes: AttributeMap;
  events: Array<{ name: 'log'; attributes: Array<{ key: string; value: unknown }> }>;
}

const NAIVE_ISO = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/;

/**
 * The original's `to_epoch_ms`: Date → ms; ISO string → ms; invalid → 0. Two fixes (CONTRACT §13
 * item 13): naive ISO strings are UTC (the original used the host's zone), and numbers are
 * classified by magnitude so that current epoch milliseconds are not read as nanoseconds
 * (the original's "> 1e12 = ns" did): > 1e17 ns, > 1e14 µs, > 1e11 ms, else seconds.
 */
export function toEpochMs(value: unknown): number {
  if (value instanceof Date) {
    const ms = value.getTime();
    return Number.isFinite(ms) ? ms : 0;
  }
  if (typeof value === 'string') {
    const text = value.trim();
    const ms = Date.parse(NAIVE_ISO.test(text) ? `${text.replace(' ', 'T')}Z` : text);
    return Number.isFinite(ms) ? ms : 0;
  }
  if (typeof value === 'number' && Number.isFinite(value) && value > 0) {
    if (value > 1e17) return Math.trunc(value / 1e6);
    if (value > 1e14) return Math.trunc(value / 1e3);
    if (value > 1e11) return Math.trunc(value);
    return Math.trunc(value * 1000);
  }
  return 0;
}

const ISO_FRACTION = /[.,](\d+)/;

/**
 * Microseconds since the epoch, for ordering only: spans of one trace often start within the same
 * millisecond (a parent and its first child), and at millisecond precision the (start, end)
 * order would put the child first. Strings keep the sub-millisecond digits Postgres stores.
 */
function epochMicros(value: unknown): number {
  const ms = toEpochMs(value);
  if (typeof value !== 'string' || ms === 0) return ms * 1000;
  const fraction = ISO_FRACTION.exec(value)?.[1] ?? '';
  return ms * 1000 + Number(fraction.slice(3, 6).padEnd(3, '0'));
}

function pickAttributes(attributes: unknown): AttributeMap {
  const picked: AttributeMap = {};
  if (typeof attributes !== 'object' || attributes === null || Array.isArray(attributes)) return picked;
  const source = attributes as AttributeMap;
  for (const key of PICKED_ATTRIBUTE_KEYS) if (key in source) picked[key] = source[key];
  return picked;
}

function compareText(a: string | null, b: string | null): number {
  const x = a ?? '';
  const y = b ?? '';
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Spans → steps in (start, end, span_id) order. */
export function spansToTrajectory(rows: readonly StoredSpan[]): SpanStep[] {
  const timed = rows.map((row) => {
    const startUs = epochMicros(row.start_time) || epochMicros(row.created_at);
    const endUs = epochMicros(row.end_time) || startUs;
    return { row, startUs, endUs };
  });
  timed.sort(
    (a, b) => a.startUs - b.startUs || a.endUs - b.endUs || compareText(a.row.span_id, b.row.span_id),
  );
  return timed.map(({ row, startUs, endUs }, index) => {
    const start = Math.floor(startUs / 1000);
    const end = Math.floor(endUs / 1000);
    const raw = row.raw as { events?: unknown } | null;
    return {
      step: index + 1,
      span_id: row.span_id,
      parent_span_id: row.parent_span_id,
      name: row.name || 'unnamed-span',
      start_time_ms: start,
      end_time_ms: end,
      latency_ms: Math.max(0, end - start),
      status: row.status,
      attributes: pickAttributes(row.attributes),
      events: Array.isArray(raw?.events) ? (raw.events as unknown[]) : [],
    };
  });
}

function nonBlank(s: string | null): s is string {
  return typeof s === 'string' && s.trim() !== '';
}

/** Log records → steps in (event time, trace_id, span_id) order. */
export function logsToTrajectory(rows: readonly StoredLog[]): LogStep[] {
  const timed = rows.map((row) => {
    const atUs = epochMicros(row.event_time) || epochMicros(row.observed_time) || epochMicros(row.created_at);
    return { row, atUs, at: Math.floor(atUs / 1000) };
  });
  timed.sort(
    (a, b) =>
      a.atUs - b.atUs ||
      compareText(a.row.trace_id, b.row.trace_id) ||
      compareText(a.row.span_id, b.row.span_id),
  );
  return timed.map(({ row, at }, index) => {
    const picked = pickAttributes(row.attributes);
    const body = nonBlank(row.body_text) ? row.body_text : (row.body_json ?? '');
    const eventAttributes: Array<{ key: string; value: unknown }> = [
      { key: 'body', value: body },
      { key: 'severity_text', value: row.severity_text ?? '' },
      { key: 'service.name', value: row.service_name ?? '' },
    ];
    for (const key of LOG_EVENT_KEYS) if (key in picked) eventAttributes.push({ key, value: picked[key] });
    return {
      step: index + 1,
      source: 'otel.log',
      trace_id: row.trace_id,
      span_id: row.span_id,
      name: row.severity_text || 'log',
      start_time_ms: at,
      end_time_ms: at,
      latency_ms: 0,
      status: row.severity_text,
      attributes: picked,
      events: [{ name: 'log', attributes: eventAttributes }],
    };
  });
}
