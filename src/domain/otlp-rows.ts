/**
 * OpenTelemetry ingest (CONTRACT §4.2), pure: the `otel_traces` / `otel_logs` row shapes the
 * flattening emits (keys are the column names), the names it shares, and which paths carry which
 * signal. Every value a row builder emits is storable as is: strings carry no NUL or lone
 * surrogate, integers fit their columns, timestamps are valid ISO-8601.
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
export const SERVICE_NAME_KEY = 'service.name';

/** Nesting a JSON body may have; OTLP needs ~4 levels per kvlist level, Postgres' jsonb parser has a stack limit. */
export const MAX_DOCUMENT_DEPTH = 128;

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
