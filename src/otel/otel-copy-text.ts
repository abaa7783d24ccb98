import type { LogRow, OtelSignal, SpanRow } from '../domain/otlp-rows';

/**
 * otel_traces / otel_logs rows (CONTRACT §4.2 columns) → the bytes of `COPY … FROM STDIN` in text
 * format. Pure, so the decode worker encodes a request's rows where it decoded them and hands the
 * collector one buffer: the rows never cross the thread boundary as objects (cloning them cost
 * as much as flattening them) and the collector's event loop only writes bytes to Postgres.
 */

/** Rows whose COPY lines are held as strings before they are written as bytes: bounds that heap. */
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
  if (typeof value === 'number') return String(value);
  const text = String(value);
  return COPY_SPECIAL.test(text) ? text.replace(/[\\\n\r\t]/g, (ch) => COPY_ESCAPES[ch] ?? ch) : text;
}

/**
 * Bytes per row of the rows encoded last: the next output buffer's first size, so a request's
 * text is written into one buffer, mostly without growing it.
 */
let bytesPerRowSeen = 1024;
/**
 * Bound of that first size: it is off-heap memory (outside the decode thread's heap cap), and a
 * request of huge rows must not make the next one, of many small rows, reserve gigabytes. Beyond
 * it the buffer doubles as the rows need.
 */
const FIRST_BUFFER_MAX_BYTES = 16 * 1024 * 1024;

function encodeRows<T extends object>(rows: readonly T[], columns: ReadonlyArray<keyof T & string>): Buffer {
  const jsonb = columns.map((column) => JSONB_COLUMNS.has(column));
  const last = columns.length - 1;
  // A resource's and a scope's attribute maps are shared by all their rows: encoded once.
  const lastValue: unknown[] = columns.map(() => undefined);
  const lastText: string[] = columns.map(() => '');
  // Its own memory (not a slice of Node's pool): the decode worker hands it over whole.
  let out = Buffer.allocUnsafeSlow(
    Math.max(1, Math.min(FIRST_BUFFER_MAX_BYTES, Math.ceil(rows.length * bytesPerRowSeen * 1.1))),
  );
  let at = 0;
  const lines: string[] = [];
  for (let start = 0; start < rows.length; start += COPY_CHUNK_ROWS) {
    // A chunk's lines, then its bytes: strings are held for one chunk only, and each line is
    // written once into the buffer (one big concatenated string cost a copy to flatten it).
    const end = Math.min(rows.length, start + COPY_CHUNK_ROWS);
    let bytes = 0;
    lines.length = 0;
    for (let r = start; r < end; r++) {
      const row = rows[r] as T;
      let line = '';
      for (let i = 0; i <= last; i++) {
        const value = row[columns[i] as keyof T & string];
        if (jsonb[i] === true && typeof value === 'object' && value !== null) {
          if (lastValue[i] !== value) {
            lastValue[i] = value;
            lastText[i] = copyField(value, true);
          }
          line += lastText[i];
        } else {
          line += copyField(value, jsonb[i] === true);
        }
        line += i === last ? '\n' : '\t';
      }
      lines.push(line);
      bytes += Buffer.byteLength(line, 'utf8');
    }
    if (at + bytes > out.length) {
      const grown = Buffer.allocUnsafeSlow(Math.max(at + bytes, out.length * 2));
      out.copy(grown, 0, 0, at);
      out = grown;
    }
    for (const line of lines) at += out.write(line, at, 'utf8');
  }
  if (rows.length > 0) bytesPerRowSeen = Math.ceil(at / rows.length);
  return out.subarray(0, at);
}

/** The COPY text of span rows (also what the bench's COPY floor streams). */
export function spanCopyText(rows: readonly SpanRow[]): Buffer {
  return encodeRows(rows, SPAN_COLUMNS);
}

export function logCopyText(rows: readonly LogRow[]): Buffer {
  return encodeRows(rows, LOG_COLUMNS);
}
