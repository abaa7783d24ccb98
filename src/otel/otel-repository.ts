import type pg from 'pg';
import {
  logsToTrajectory,
  spansToTrajectory,
  type LogRow,
  type LogStep,
  type SpanRow,
  type SpanStep,
  type StoredLog,
  type StoredSpan,
} from '../domain/otlp-flatten';

/**
 * otel_traces / otel_logs (CONTRACT §4.2 columns, §4.4 queries). A request's rows go in as one
 * `json_to_recordset` INSERT per chunk — one parameter, one round trip, no bind-parameter limit —
 * inside one transaction when there is more than one chunk, so a request is stored whole or not at all.
 */

/** Rows per statement: bounds the JSON text of one statement (~2 KB a span) well below pg's limits. */
export const INSERT_CHUNK_ROWS = 2000;

const SPAN_COLUMNS = `trace_id text, span_id text, parent_span_id text, name text, service_name text, status text,
  attributes jsonb, resource_attributes jsonb, scope_attributes jsonb, scope_name text, scope_version text,
  start_time timestamptz, end_time timestamptz, run_case_id bigint, experiment_id bigint, raw jsonb`;

const INSERT_SPANS = `
INSERT INTO otel_traces (trace_id, span_id, parent_span_id, name, service_name, status, attributes,
  resource_attributes, scope_attributes, scope_name, scope_version, start_time, end_time, run_case_id,
  experiment_id, raw)
SELECT trace_id, span_id, parent_span_id, name, service_name, status, attributes, resource_attributes,
  scope_attributes, scope_name, scope_version, start_time, end_time, run_case_id, experiment_id, raw
FROM json_to_recordset($1::json) AS r(${SPAN_COLUMNS})`;

const LOG_COLUMNS = `trace_id text, span_id text, service_name text, severity_text text, severity_number int,
  body_text text, body_json jsonb, attributes jsonb, resource_attributes jsonb, scope_attributes jsonb,
  scope_name text, scope_version text, flags int, dropped_attributes_count int, event_time timestamptz,
  observed_time timestamptz, run_case_id bigint, experiment_id bigint, raw jsonb`;

// json_to_recordset reads a JSON null as SQL NULL; body_json must be JSON null instead (§4.2).
const INSERT_LOGS = `
INSERT INTO otel_logs (trace_id, span_id, service_name, severity_text, severity_number, body_text, body_json,
  attributes, resource_attributes, scope_attributes, scope_name, scope_version, flags, dropped_attributes_count,
  event_time, observed_time, run_case_id, experiment_id, raw)
SELECT trace_id, span_id, service_name, severity_text, severity_number, body_text,
  COALESCE(body_json, 'null'::jsonb), attributes, resource_attributes, scope_attributes, scope_name, scope_version,
  flags, dropped_attributes_count, event_time, observed_time, run_case_id, experiment_id, raw
FROM json_to_recordset($1::json) AS r(${LOG_COLUMNS})`;

async function insertChunked(pool: pg.Pool, name: string, sql: string, rows: readonly object[]): Promise<number> {
  if (rows.length === 0) return 0;
  const chunks: string[] = [];
  for (let i = 0; i < rows.length; i += INSERT_CHUNK_ROWS) {
    chunks.push(JSON.stringify(rows.slice(i, i + INSERT_CHUNK_ROWS)));
  }
  // Named: each connection parses and plans the statement once.
  const statement = (json: string): pg.QueryConfig => ({ name, text: sql, values: [json] });
  if (chunks.length === 1) {
    await pool.query(statement(chunks[0] as string));
    return rows.length;
  }
  const client = await pool.connect();
  // A connection whose ROLLBACK failed is in an unknown state: released with the error, pg discards it.
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    for (const json of chunks) await client.query(statement(json));
    await client.query('COMMIT');
    return rows.length;
  } catch (err) {
    await client.query('ROLLBACK').catch((rollbackErr: unknown) => {
      broken = rollbackErr instanceof Error ? rollbackErr : new Error(String(rollbackErr));
    });
    throw err;
  } finally {
    client.release(broken);
  }
}

export function insertSpans(pool: pg.Pool, rows: readonly SpanRow[]): Promise<number> {
  return insertChunked(pool, 'agentbench-otel-insert-spans', INSERT_SPANS, rows);
}

export function insertLogs(pool: pg.Pool, rows: readonly LogRow[]): Promise<number> {
  return insertChunked(pool, 'agentbench-otel-insert-logs', INSERT_LOGS, rows);
}

// ---------------------------------------------------------------------------------------------
// After a case (CONTRACT §4.4)

/** The window around "now": from 15 min + 60 s before to 60 s + 60 s after. */
export const QUERY_WINDOW_BEFORE_MS = 15 * 60_000 + 60_000;
export const QUERY_WINDOW_AFTER_MS = 60_000 + 60_000;
export const LOG_QUERY_LIMIT = 4000;
export const SPAN_QUERY_LIMIT = 2000;

const SELECT_LOGS = `
SELECT trace_id, span_id, service_name, severity_text, body_text, body_json, attributes, event_time, observed_time,
  created_at
FROM otel_logs
WHERE is_deleted = false AND run_case_id = $1
  AND ((event_time BETWEEN $2 AND $3) OR (created_at BETWEEN $2 AND $3))
ORDER BY COALESCE(event_time, created_at), id
LIMIT ${LOG_QUERY_LIMIT}`;

// The mapping reads only raw.events; shipping the whole raw span would triple the bytes fetched.
const SELECT_SPANS = `
SELECT span_id, parent_span_id, name, status, attributes, start_time, end_time, created_at,
  jsonb_build_object('events', raw->'events') AS raw
FROM otel_traces
WHERE is_deleted = false AND run_case_id = $1
  AND ((start_time BETWEEN $2 AND $3) OR (created_at BETWEEN $2 AND $3))
ORDER BY COALESCE(start_time, created_at), id
LIMIT ${SPAN_QUERY_LIMIT}`;

/** A span attribute's token count when it is a non-negative number or numeric string. */
function tokenCount(key: string): string {
  const value = `attributes->'${key}'`;
  const text = `attributes->>'${key}'`;
  return `CASE WHEN jsonb_typeof(${value}) = 'number' THEN (${text})::numeric
    WHEN ${text} ~ '^\\s*\\d+(\\.\\d+)?\\s*$' THEN trim(${text})::numeric END`;
}

// gen_ai semantic conventions; the pre-1.27 names (prompt/completion) for older instrumentations.
const SELECT_USAGE = `
SELECT round(sum(input_tokens))::float8 AS input_tokens, round(sum(output_tokens))::float8 AS output_tokens,
  (count(input_tokens) + count(output_tokens))::int AS reported
FROM (
  SELECT COALESCE(${tokenCount('gen_ai.usage.input_tokens')}, ${tokenCount('gen_ai.usage.prompt_tokens')}) AS input_tokens,
    COALESCE(${tokenCount('gen_ai.usage.output_tokens')}, ${tokenCount('gen_ai.usage.completion_tokens')}) AS output_tokens
  FROM otel_traces
  WHERE is_deleted = false AND run_case_id = $1
    AND ((start_time BETWEEN $2 AND $3) OR (created_at BETWEEN $2 AND $3))
) AS t`;

export interface CaseTelemetry {
  steps: Array<SpanStep | LogStep>;
  source: 'logs' | 'spans' | 'none';
  usage: { inputTokens: number; outputTokens: number } | null;
}

/**
 * The case's trajectory: its logs if they map to any step, else its spans (CONTRACT §4.4), plus
 * the token usage its spans report (gen_ai.usage.*), null when none does.
 */
export async function queryCaseTelemetry(pool: pg.Pool, runCaseId: number, nowMs: number): Promise<CaseTelemetry> {
  const window = [runCaseId, new Date(nowMs - QUERY_WINDOW_BEFORE_MS), new Date(nowMs + QUERY_WINDOW_AFTER_MS)];
  const [logs, usage] = await Promise.all([
    pool.query<StoredLog>(SELECT_LOGS, window),
    pool.query<{ input_tokens: number | null; output_tokens: number | null; reported: number }>(SELECT_USAGE, window),
  ]);
  const usageRow = usage.rows[0];
  const tokens =
    usageRow && usageRow.reported > 0
      ? { inputTokens: usageRow.input_tokens ?? 0, outputTokens: usageRow.output_tokens ?? 0 }
      : null;

  const logSteps = logsToTrajectory(logs.rows);
  if (logSteps.length > 0) return { steps: logSteps, source: 'logs', usage: tokens };
  const spans = await pool.query<StoredSpan>(SELECT_SPANS, window);
  const spanSteps = spansToTrajectory(spans.rows);
  return { steps: spanSteps, source: spanSteps.length > 0 ? 'spans' : 'none', usage: tokens };
}
