import type { AttributeMap } from './otlp-rows';

/** Trajectory mapping (CONTRACT §4.4), pure: stored otel rows → the run case's `agent_trajectory` steps. */

// ---------------------------------------------------------------------------------------------
// Trajectory (CONTRACT §4.4)

const PICKED_ATTRIBUTE_KEYS = [
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
