import { OtlpPayloadError } from './otlp-rows';

/** OTLP scalar fields (ids, timestamps, integers, severity, status) → column values, pure. */

// ---------------------------------------------------------------------------------------------
// Scalars

/** The first value that is neither null nor undefined (camelCase and snake_case spellings of one field). */
export function first<T>(...values: Array<T | null | undefined>): T | undefined {
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

const ALL_ZEROS = /^0+$/;
/** How much of a refused id an error message quotes. */
const ID_PREVIEW_CHARS = 40;

/**
 * Trace/span ids as lowercase hex of exactly `byteLength` bytes. OTLP JSON says hex; clients built
 * on protobuf's JSON mapping send base64, which is recognisable because it decodes to exactly the
 * id's byte length (a hex id never does). Blank → null. An all-zero id is invalid in OTLP; where it
 * is how a client says "none" (`zero: 'absent'`: a root span's parent, a log outside any span) it
 * is null. Anything else is refused (OtlpPayloadError, a 400): stored as sent, a forged or 100 KB
 * id would corrupt every trajectory and trace query that joins on it.
 */
export function normalizeId(
  value: unknown,
  byteLength: 8 | 16,
  field: string,
  zero: 'invalid' | 'absent' = 'invalid',
): string | null {
  if (typeof value !== 'string') return null;
  const id = value.trim();
  if (id === '') return null;
  let hex: string | null = null;
  if (id.length === byteLength * 2 && HEX_ID.test(id)) hex = id.toLowerCase();
  else if (BASE64_ID.test(id)) hex = base64ToHex(id);
  if (hex !== null && hex.length === byteLength * 2) {
    if (!ALL_ZEROS.test(hex)) return hex;
    if (zero === 'absent') return null;
  }
  const preview =
    id.length > ID_PREVIEW_CHARS ? `${id.slice(0, ID_PREVIEW_CHARS)}… (${id.length} chars)` : id;
  throw new OtlpPayloadError(
    `${field} must be ${byteLength * 2} hex characters (or base64 of ${byteLength} bytes), not all zero; got ${JSON.stringify(preview)}`,
  );
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
export function integerOf(value: unknown): number | null {
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
export function flagsOrNull(value: unknown): number | null {
  const n = integerOf(value);
  return n !== null && n >= 0 && n <= 0xffffffff ? n | 0 : null;
}

/** dropped_attributes_count is uint32; an INT column saturates. */
export function countOrNull(value: unknown): number | null {
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
export function severityNumberOf(value: unknown): number | null {
  if (typeof value === 'string' && value.startsWith('SEVERITY_NUMBER_')) {
    const index = SEVERITY_NAMES.indexOf(value.slice('SEVERITY_NUMBER_'.length));
    return index >= 0 ? index : null;
  }
  return int32OrNull(value);
}

/** Python truthiness, which the original's "first of" rules use. */
export function truthy(value: unknown): boolean {
  if (value === null || value === undefined || value === false || value === 0 || value === '') return false;
  if (Array.isArray(value)) return value.length > 0;
  if (typeof value === 'object') return Object.keys(value).length > 0;
  return true;
}

export function firstTruthy(...values: unknown[]): unknown {
  for (const v of values) if (truthy(v)) return v;
  return undefined;
}

/** Python `int(v)` for a correlation id, limited to what a BIGINT and a JS number both hold. */
export function correlationIdOf(value: unknown): number | null {
  const n = integerOf(value);
  return n !== null && Number.isSafeInteger(n) ? n : null;
}

export function textOrNull(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return null;
}

/** OTLP status: `code`, else `message`, stringified (JSON clients send 1/2, enum-name clients STATUS_CODE_*). */
export function statusOf(status: unknown): string | null {
  if (status === null || status === undefined) return null;
  if (typeof status !== 'object' || Array.isArray(status)) return truthy(status) ? textOrNull(status) : null;
  const { code, message } = status as { code?: unknown; message?: unknown };
  const picked = firstTruthy(code, message);
  return picked === undefined ? null : textOrNull(picked);
}
