import { REDACTED, redactSecretsIfNeeded } from './secret-redaction';
import { integerOf, correlationIdOf, firstTruthy } from './otlp-scalars';
import { storableString } from './otlp-document';
import {
  DATA_ITEM_ID_KEY,
  EXPERIMENT_ID_KEY,
  OtlpPayloadError,
  RUN_CASE_ID_KEY,
  type AttributeMap,
  type CaseAttribution,
  type LogRow,
  type SpanRow,
} from './otlp-rows';

/** OTLP attributes (AnyValue, KeyValue lists) → plain objects, and a row's case correlation, pure. */

/**
 * A span's events with their attributes redacted as the span's own are: `raw.events` is what the
 * trajectory keeps, so an event's `authorization` must not outlive the span's. The span itself when
 * nothing changed (no copy on the hot path).
 */
export function withRedactedEvents<T extends object>(span: T): T {
  const spanEvents = (span as { events?: unknown }).events;
  if (!Array.isArray(spanEvents)) return span;
  let changed = false;
  const events = spanEvents.map((event: unknown) => {
    if (!isRecord(event) || !Array.isArray(event.attributes)) return event;
    const { raw } = redactedRecord(event as { attributes: unknown[] }, decodeAttributes(event.attributes));
    if (raw !== event) changed = true;
    return raw;
  });
  return changed ? { ...span, events } : span;
}

/** A log record whose body the redaction changed keeps only the redacted form in `raw` too. */
export function withRedactedBody<T extends { body?: unknown }>(
  record: T,
  decoded: unknown,
  redacted: unknown,
): T {
  if (!redactionChanged(decoded, redacted)) return record;
  return { ...record, body: { stringValue: typeof redacted === 'string' ? redacted : REDACTED } };
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
  // Most values are strings, and `member` would find this one first too.
  if (typeof value.stringValue === 'string') return value.stringValue;
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
      defineOwn(out, key, decodeAnyValue(kv.value));
    } catch (err) {
      if (err instanceof OtlpPayloadError) throw new OtlpPayloadError(`attribute "${key}": ${err.message}`);
      throw err;
    }
  }
  return out;
}

/** An own property even for `__proto__` (assignment would replace the map's prototype instead). */
function defineOwn(map: AttributeMap, key: string, value: unknown): void {
  if (key === '__proto__')
    Object.defineProperty(map, key, { value, enumerable: true, writable: true, configurable: true });
  else map[key] = value;
}

/** Primitives are kept by redactSecrets when unchanged; only copied structures need comparing. */
function redactionChanged(before: unknown, after: unknown): boolean {
  if (before === after) return false;
  if (typeof before !== 'object' || before === null) return true;
  return JSON.stringify(before) !== JSON.stringify(after);
}

/**
 * redactSecrets on the decoded map, mirrored into the record's own KeyValue list so `raw` does not
 * keep what `attributes` hides (a changed string as redacted, a changed nested value as REDACTED).
 */
export function redactedRecord<T extends { attributes?: unknown[] | null }>(
  record: T,
  decoded: AttributeMap,
): { attributes: AttributeMap; raw: T } {
  const attributes = redactSecretsIfNeeded(decoded);
  if (attributes === decoded) return { attributes, raw: record };
  // Every attribute the redaction changed: a secret-named one, a URL's query, a nested map's secret.
  const changed = new Set(Object.keys(attributes).filter((k) => redactionChanged(decoded[k], attributes[k])));
  if (changed.size === 0 || !record.attributes) return { attributes, raw: record };
  const raw = {
    ...record,
    attributes: record.attributes.map((kv) => {
      if (!isRecord(kv) || typeof kv.key !== 'string' || !changed.has(kv.key)) return kv;
      const value = attributes[kv.key];
      return { ...kv, value: { stringValue: typeof value === 'string' ? value : REDACTED } };
    }),
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
export function withExtras(
  attributes: AttributeMap,
  resource: AttributeMap,
  extras: Record<string, string>,
): AttributeMap {
  for (const [key, value] of Object.entries(extras)) {
    if (!(key in attributes) && !(key in resource)) attributes[key] = value;
  }
  return attributes;
}

export function correlation(
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
 * attributes and columns are overwritten (and added where missing). In place — the rows are the
 * flattener's, fresh per request (each row has its own attribute map; rows of one resource share
 * theirs, which is replaced by one attributed copy) — so a request's rows are not built twice.
 */
export function attributeToCase<T extends SpanRow | LogRow>(rows: T[], c: CaseAttribution): T[] {
  const claims: Record<string, string> = {
    [RUN_CASE_ID_KEY]: String(c.runCaseId),
    [EXPERIMENT_ID_KEY]: String(c.experimentId),
    [DATA_ITEM_ID_KEY]: String(c.dataItemId),
  };
  const attributed = new Map<AttributeMap, AttributeMap>();
  for (const row of rows) {
    let resource = attributed.get(row.resource_attributes);
    if (resource === undefined) {
      resource = mergedAttributes(row.resource_attributes, {});
      for (const key of Object.keys(claims)) if (key in resource) resource[key] = claims[key];
      attributed.set(row.resource_attributes, resource);
    }
    Object.assign(row.attributes, claims);
    row.resource_attributes = resource;
    row.run_case_id = c.runCaseId;
    row.experiment_id = c.experimentId;
  }
  return rows;
}

/**
 * `{...base, ...overlay}` as Object.assign: V8's spread of a dozen dotted keys builds a slow
 * object, which made flattening 1000 spans 60% slower and their JSON encoding slower too.
 */
export function mergedAttributes(base: AttributeMap, overlay: AttributeMap): AttributeMap {
  const merged: AttributeMap = Object.assign({}, base, overlay);
  // Object.assign treats a `__proto__` key as the prototype setter: put it back as a key (rare).
  if (hasProtoKey(base) || hasProtoKey(overlay)) {
    Object.setPrototypeOf(merged, Object.prototype);
    defineOwn(merged, '__proto__', (hasProtoKey(overlay) ? overlay : base)['__proto__']);
  }
  return merged;
}

function hasProtoKey(map: AttributeMap): boolean {
  return Object.prototype.hasOwnProperty.call(map, '__proto__');
}
