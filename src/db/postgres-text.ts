/**
 * Agent output is arbitrary text. Postgres rejects NUL in TEXT and `\u0000` or unpaired surrogate
 * escapes in JSONB, which would make a persist fail on every retry. Such characters become U+FFFD.
 */

// eslint-disable-next-line no-control-regex -- matching NUL is the point
const UNSTORABLE = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

export function toPostgresText(s: string): string {
  return s.replace(UNSTORABLE, '\uFFFD');
}

/** JSON text for a `$n::jsonb` parameter; undefined and null become SQL NULL. */
export function toJsonbParam(value: unknown): string | null {
  if (value === undefined || value === null) return null;
  return JSON.stringify(value, (_key, v: unknown) => {
    if (typeof v === 'string') return toPostgresText(v);
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      const entries = Object.entries(v);
      if (entries.some(([k]) => toPostgresText(k) !== k)) {
        return Object.fromEntries(entries.map(([k, x]) => [toPostgresText(k), x]));
      }
    }
    return v;
  });
}

/** SQL rendering a timestamptz expression as RFC 3339 UTC text with milliseconds (`…T…Z`), whatever the session time zone. */
export function utcText(expression: string): string {
  return `to_char(${expression} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
}
