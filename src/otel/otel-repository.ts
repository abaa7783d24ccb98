import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
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
import type { OtelSignal } from '../domain/otlp-rows';
import { copyStatement, logCopyText, spanCopyText } from './otel-copy-text';

export { COPY_CHUNK_ROWS, SPAN_COLUMNS } from './otel-copy-text';

/**
 * otel_traces / otel_logs (CONTRACT §4.2 columns, §4.4 queries). A request's rows go in with one
 * COPY … FROM STDIN of the text otel-copy-text encoded (in the decode worker, for the collector):
 * one statement, so a request is stored whole or not at all, at the server CPU of COPY itself —
 * bench/otel-ingest.ts compares the collector with COPY of the same, already encoded, rows.
 */

/**
 * A span row is over the 2 kB TOAST threshold (raw repeats the attributes), so Postgres compresses
 * its jsonb; pglz costs several times lz4's CPU and Postgres is the ingest's bottleneck (bench:
 * ~1.7 of 2 cores at the COPY floor). Set for the COPY only and reset after it: the pool is
 * shared, and the platform's other writes keep the server default. The tables are the
 * platform's, so no ALTER TABLE … SET COMPRESSION (CONTRACT §4.2). Readers need nothing: any
 * Postgres >= 14 built with lz4 decompresses transparently; one without lz4 (or older) refuses the
 * SET, and the ingest then stays on the default (see `lz4Refused`).
 */
export const INGEST_TOAST_COMPRESSION = 'SET default_toast_compression = lz4';
const RESET_TOAST_COMPRESSION = 'RESET default_toast_compression';

/** Set once a server refused lz4 (built without it): the ingest then uses its default compression. */
let lz4Refused = false;

/** Stores COPY text of a signal's rows (otel-copy-text); resolves once Postgres has committed it. */
export async function copyRows(pool: pg.Pool, signal: OtelSignal, text: Uint8Array): Promise<void> {
  if (text.byteLength === 0) return;
  const client = await pool.connect();
  // A connection whose COPY failed midway is released with the error, so pg discards it.
  let failure: Error | undefined;
  try {
    const lz4 = !lz4Refused && (await setLz4(client));
    const sink = client.query(copyFrom(copyStatement(signal)));
    const bytes = Buffer.isBuffer(text) ? text : Buffer.from(text.buffer, text.byteOffset, text.byteLength);
    await pipeline(Readable.from([bytes]), sink);
    if (lz4) await client.query(RESET_TOAST_COMPRESSION);
  } catch (err) {
    failure = err instanceof Error ? err : new Error(String(err));
    throw err;
  } finally {
    client.release(failure);
  }
}

/** lz4 for this session's TOAST values; false (and never asked again) if the server lacks lz4. */
async function setLz4(client: pg.PoolClient): Promise<boolean> {
  try {
    await client.query(INGEST_TOAST_COMPRESSION);
    return true;
  } catch (err) {
    // 22023: built without lz4; 42704: before Postgres 14 (no such setting). Anything else is real.
    const code = (err as { code?: string }).code;
    if (code !== '22023' && code !== '42704') throw err;
    lz4Refused = true;
    return false;
  }
}

export async function insertSpans(pool: pg.Pool, rows: readonly SpanRow[]): Promise<number> {
  await copyRows(pool, 'traces', spanCopyText(rows));
  return rows.length;
}

export async function insertLogs(pool: pg.Pool, rows: readonly LogRow[]): Promise<number> {
  await copyRows(pool, 'logs', logCopyText(rows));
  return rows.length;
}

// ---------------------------------------------------------------------------------------------
// After a case (CONTRACT §4.4)

/** The window around "now": from 15 min + 60 s before to 60 s + 60 s after. */
const QUERY_WINDOW_BEFORE_MS = 15 * 60_000 + 60_000;
const QUERY_WINDOW_AFTER_MS = 60_000 + 60_000;
const LOG_QUERY_LIMIT = 4000;
export const SPAN_QUERY_LIMIT = 2000;

/** A timestamptz as ISO text with its microseconds (a JS Date would keep milliseconds only). */
function isoMicros(column: string): string {
  return `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS ${column}`;
}

const SELECT_LOGS = `
SELECT trace_id, span_id, service_name, severity_text, body_text, body_json, attributes, ${isoMicros('event_time')},
  ${isoMicros('observed_time')}, ${isoMicros('created_at')}
FROM otel_logs
WHERE is_deleted = false AND run_case_id = $1
  AND ((event_time BETWEEN $2 AND $3) OR (created_at BETWEEN $2 AND $3))
ORDER BY COALESCE(event_time, created_at), id
LIMIT ${LOG_QUERY_LIMIT}`;

// The mapping reads only raw.events; shipping the whole raw span would triple the bytes fetched.
const SELECT_SPANS = `
SELECT span_id, parent_span_id, name, status, attributes, ${isoMicros('start_time')}, ${isoMicros('end_time')},
  ${isoMicros('created_at')}, jsonb_build_object('events', raw->'events') AS raw
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
export async function queryCaseTelemetry(
  pool: pg.Pool,
  runCaseId: number,
  nowMs: number,
): Promise<CaseTelemetry> {
  const window = [
    runCaseId,
    new Date(nowMs - QUERY_WINDOW_BEFORE_MS),
    new Date(nowMs + QUERY_WINDOW_AFTER_MS),
  ];
  const [logs, usage] = await Promise.all([
    pool.query<StoredLog>(SELECT_LOGS, window),
    pool.query<{ input_tokens: number | null; output_tokens: number | null; reported: number }>(
      SELECT_USAGE,
      window,
    ),
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
