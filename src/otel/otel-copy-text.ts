import type { LogRow, OtelSignal, SpanRow } from '../domain/otlp-rows';

/**
 * otel_traces / otel_logs rows (CONTRACT §4.2 columns) → the bytes of `COPY … FROM STDIN` in text
 * format. Pure, so the decode worker encodes a request's rows where it decoded them and hands the
 * collector one buffer: the rows never cross the thread boundary as objects (cloning them cost
 * as much as flattening them) and the collector's event loop only writes bytes to Postgres.
 */

/** Rows encoded into one string before it becomes bytes: bounds the string heap held at once. */
export const COPY_CHUNK_ROWS = 500;

export const SPAN_COLUMNS = [
  'trace_id',
  'span_id',
  'parent_span_id',
  'name',
  'service_name',
  'status',
  'attributes',
  'resource_attributes',
  'scope_attributes',
  'scope_name',
  'scope_version',
  'start_time',
  'end_time',
  'run_case_id',
  'experiment_id',
  'raw',
] as const satisfies ReadonlyArray<keyof SpanRow>;

export const LOG_COLUMNS = [
  'trace_id',
  'span_id',
  'service_name',
  'severity_text',
  'severity_number',
  'body_text',
  'body_json',
  'attributes',
  'resource_attributes',
  'scope_attributes',
  'scope_name',
  'scope_version',
  'flags',
  'dropped_attributes_count',
  'event_time',
  'observed_time',
  'run_case_id',
  'experiment_id',
  'raw',
] as const satisfies ReadonlyArray<keyof LogRow>;

/** The table and column list of a signal's COPY statement. */
export function copyStatement(signal: OtelSignal): string {
  return signal === 'traces'
    ? `COPY otel_traces (${SPAN_COLUMNS.join(', ')}) FROM STDIN`
    : `COPY otel_logs (${LOG_COLUMNS.join(', ')}) FROM STDIN`;
}

const JSONB_COLUMNS: ReadonlySet<string> = new Set([
  'attributes',
  'resource_attributes',
  'scope_attributes',
  'raw',
  'body_json',
]);

const COPY_SPECIAL = /[\\\n\r\t]/;
const COPY_ESCAPES: Readonly<Record<string, string>> = {
  '\\': '\\\\',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
};

/**
 * One field of COPY's text format. jsonb columns always get JSON text, so a null body_json is
 * stored as JSON null, never SQL NULL (§4.2). JSON text has no raw control characters, only
 * backslashes to double. Row builders already removed NUL characters.
 */
function copyField(value: unknown, jsonb: boolean): string {
  if (jsonb) {
    const json = JSON.stringify(value ?? null);
    return json.includes('\\') ? json.replace(/\\/g, '\\\\') : json;
  }
  if (value === null || value === undefined) return '\\N';
  const text = String(value);
  return COPY_SPECIAL.test(text) ? text.replace(/[\\\n\r\t]/g, (ch) => COPY_ESCAPES[ch] ?? ch) : text;
}

function encodeRows<T extends object>(rows: readonly T[], columns: ReadonlyArray<keyof T & string>): Buffer {
  const jsonb = columns.map((column) => JSONB_COLUMNS.has(column));
  const last = columns.length - 1;
  // A resource's and a scope's attribute maps are shared by all their rows: encoded once.
  const lastValue: unknown[] = columns.map(() => undefined);
  const lastText: string[] = columns.map(() => '');
  const chunks: Buffer[] = [];
  for (let start = 0; start < rows.length; start += COPY_CHUNK_ROWS) {
    let chunk = '';
    const end = Math.min(rows.length, start + COPY_CHUNK_ROWS);
    for (let r = start; r < end; r++) {
      const row = rows[r] as T;
      for (let i = 0; i <= last; i++) {
        const value = row[columns[i] as keyof T & string];
        if (jsonb[i] === true && typeof value === 'object' && value !== null) {
          if (lastValue[i] !== value) {
            lastValue[i] = value;
            lastText[i] = copyField(value, true);
          }
          chunk += lastText[i];
        } else {
          chunk += copyField(value, jsonb[i] === true);
        }
        chunk += i === last ? '\n' : '\t';
      }
    }
    chunks.push(Buffer.from(chunk, 'utf8'));
  }
  return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks);
}

/** The COPY text of span rows (also what the bench's COPY floor streams). */
export function spanCopyText(rows: readonly SpanRow[]): Buffer {
  return encodeRows(rows, SPAN_COLUMNS);
}

export function logCopyText(rows: readonly LogRow[]): Buffer {
  return encodeRows(rows, LOG_COLUMNS);
}
