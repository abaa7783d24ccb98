import { z } from 'zod';
import { redactSecrets } from './secret-redaction';
import {
  asDocument,
  logsDocumentSchema,
  parseWith,
  simplifiedLogSchema,
  simplifiedSpanSchema,
  tracesDocumentSchema,
} from './otlp-document';
import {
  correlation,
  decodeAnyValue,
  decodeAttributes,
  mergedAttributes,
  redactedRecord,
  withExtras,
  withRedactedBody,
  withRedactedEvents,
} from './otlp-attributes';
import {
  countOrNull,
  first,
  firstTruthy,
  flagsOrNull,
  isoFromUnixNanos,
  normalizeId,
  normalizeIsoTimestamp,
  severityNumberOf,
  statusOf,
  textOrNull,
  truthy,
} from './otlp-scalars';
import {
  DEFAULT_SERVICE_NAME,
  EXPERIMENT_ID_KEY,
  RUN_CASE_ID_KEY,
  SERVICE_NAME_KEY,
  type LogRow,
  type SpanRow,
} from './otlp-rows';

/**
 * OpenTelemetry ingest (CONTRACT §4.2), pure: an OTLP JSON document or the simplified forms →
 * `otel_traces` / `otel_logs` row objects (otlp-rows). The parts live beside it: otlp-document
 * (hygiene, accepted shapes), otlp-scalars, otlp-attributes (and correlation); the trajectory
 * mapping of stored rows is otlp-trajectory.
 */

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
          trace_id: normalizeId(first(span.traceId, span.trace_id), 16, 'traceId'),
          span_id: normalizeId(first(span.spanId, span.span_id), 8, 'spanId'),
          parent_span_id: normalizeId(
            first(span.parentSpanId, span.parent_span_id),
            8,
            'parentSpanId',
            'absent',
          ),
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
          raw: withRedactedEvents(own.raw),
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
      trace_id: normalizeId(first(item.trace_id, item.traceId), 16, 'trace_id'),
      span_id: normalizeId(first(item.span_id, item.spanId), 8, 'span_id'),
      parent_span_id: normalizeId(
        first(item.parent_span_id, item.parentSpanId),
        8,
        'parent_span_id',
        'absent',
      ),
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
        const decodedBody = decodeAnyValue(record.body);
        const body = redactSecrets(decodedBody);
        const attributes = mergedAttributes(resource, own.attributes);
        // Resource first for logs, unlike spans (CONTRACT §4.2; kept for compatibility).
        const serviceName = serviceNameOf(resource[SERVICE_NAME_KEY], attributes[SERVICE_NAME_KEY]);
        if (!(SERVICE_NAME_KEY in attributes)) attributes[SERVICE_NAME_KEY] = serviceName;
        withExtras(attributes, resource, extras);
        rows.push({
          trace_id: normalizeId(first(record.traceId, record.trace_id), 16, 'traceId', 'absent'),
          span_id: normalizeId(first(record.spanId, record.span_id), 8, 'spanId', 'absent'),
          service_name: serviceName,
          severity_text: first(record.severityText, record.severity_text) ?? null,
          severity_number: severityNumberOf(first(record.severityNumber, record.severity_number)),
          ...otlpBody(body),
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
          raw: withRedactedBody(own.raw, decodedBody, body),
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
      trace_id: normalizeId(item.trace_id, 16, 'trace_id', 'absent'),
      span_id: normalizeId(item.span_id, 8, 'span_id', 'absent'),
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

// Still imported from here by modules other areas own (activities/case-network,
// src/otel/otel-repository); new code imports them from where they live.
export type { CaseAttribution, LogRow, SpanRow } from './otlp-rows';
export {
  logsToTrajectory,
  spansToTrajectory,
  type LogStep,
  type SpanStep,
  type StoredLog,
  type StoredSpan,
} from './otlp-trajectory';
