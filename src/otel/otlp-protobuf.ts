import path from 'node:path';
import protobuf from 'protobufjs';
import { storableString } from '../domain/otlp-document';
import { OtlpPayloadError, type OtelSignal } from '../domain/otlp-rows';
import { errorText } from '../domain/errors';

/**
 * OTLP/HTTP protobuf bodies (`ExportTraceServiceRequest`, `ExportLogsServiceRequest`) → the OTLP
 * JSON document the flattener reads, spelled as OTLP JSON clients send it: camelCase keys,
 * trace/span ids as lowercase hex (the original stored protobuf ids as base64), 64-bit integers
 * as decimal strings, enums as numbers, other bytes as base64. Fields holding their proto3
 * default (0, "", empty) are omitted, so the document does not depend on whether an encoder
 * wrote defaults explicitly. Every string is made storable (see storableString).
 */

const PROTO_DIR = path.join(__dirname, 'proto');
/** AnyValue nesting (arrays/kvlists inside attribute values) a request may use. */
export const MAX_ANY_VALUE_DEPTH = 32;

const root = new protobuf.Root();
root.resolvePath = (_origin, target) => path.join(PROTO_DIR, target);
root.loadSync(
  [
    'opentelemetry/proto/collector/trace/v1/trace_service.proto',
    'opentelemetry/proto/collector/logs/v1/logs_service.proto',
  ],
  { keepCase: false },
);
root.resolveAll();

const REQUEST_TYPES: Record<OtelSignal, protobuf.Type> = {
  traces: root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest'),
  logs: root.lookupType('opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest'),
};

// ---------------------------------------------------------------------------------------------
// Decoded message shapes (protobufjs, camelCase). 64-bit fields are Long objects (protobufjs uses
// `long` when installed, which it depends on) or numbers; bytes are Uint8Arrays.

interface LongLike {
  low: number;
  high: number;
  unsigned: boolean;
}
type Int64 = LongLike | number;

interface PbAnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: Int64;
  doubleValue?: number;
  arrayValue?: { values: PbAnyValue[] };
  kvlistValue?: { values: PbKeyValue[] };
  bytesValue?: Uint8Array;
}
interface PbKeyValue {
  key: string;
  value?: PbAnyValue | null;
}
interface PbScope {
  name: string;
  version: string;
  attributes?: PbKeyValue[];
  droppedAttributesCount?: number;
}
interface PbResource {
  attributes: PbKeyValue[];
  droppedAttributesCount: number;
}
interface PbEvent {
  timeUnixNano: Int64;
  name: string;
  attributes: PbKeyValue[];
  droppedAttributesCount: number;
}
interface PbLink {
  traceId: Uint8Array;
  spanId: Uint8Array;
  traceState: string;
  attributes: PbKeyValue[];
  droppedAttributesCount: number;
  flags: number;
}
interface PbSpan {
  traceId: Uint8Array;
  spanId: Uint8Array;
  traceState: string;
  parentSpanId: Uint8Array;
  flags: number;
  name: string;
  kind: number;
  startTimeUnixNano: Int64;
  endTimeUnixNano: Int64;
  attributes: PbKeyValue[];
  droppedAttributesCount: number;
  events: PbEvent[];
  droppedEventsCount: number;
  links: PbLink[];
  droppedLinksCount: number;
  status?: { message: string; code: number } | null;
}
interface PbScopeSpans {
  scope?: PbScope | null;
  instrumentationLibrary?: PbScope | null;
  spans: PbSpan[];
  schemaUrl: string;
}
interface PbResourceSpans {
  resource?: PbResource | null;
  scopeSpans: PbScopeSpans[];
  instrumentationLibrarySpans: PbScopeSpans[];
  schemaUrl: string;
}
interface PbLogRecord {
  timeUnixNano: Int64;
  observedTimeUnixNano: Int64;
  severityNumber: number;
  severityText: string;
  body?: PbAnyValue | null;
  attributes: PbKeyValue[];
  droppedAttributesCount: number;
  flags: number;
  traceId: Uint8Array;
  spanId: Uint8Array;
  eventName: string;
}
interface PbScopeLogs {
  scope?: PbScope | null;
  instrumentationLibrary?: PbScope | null;
  logRecords: PbLogRecord[];
  schemaUrl: string;
}
interface PbResourceLogs {
  resource?: PbResource | null;
  scopeLogs: PbScopeLogs[];
  instrumentationLibraryLogs: PbScopeLogs[];
  schemaUrl: string;
}

// ---------------------------------------------------------------------------------------------
// Conversion

type Json = Record<string, unknown>;

function has(message: object, field: string): boolean {
  return Object.prototype.hasOwnProperty.call(message, field);
}

function text(s: string): string {
  return storableString(s);
}

/** Via BigInt: several times faster than Long's own toString, which divides in 32-bit halves. */
function int64Text(v: Int64): string {
  if (typeof v === 'number') return String(v);
  const bits = (BigInt(v.high >>> 0) << 32n) | BigInt(v.low >>> 0);
  return (v.unsigned ? bits : BigInt.asIntN(64, bits)).toString();
}

function isZero(v: Int64 | null | undefined): boolean {
  return v === null || v === undefined || (typeof v === 'number' ? v === 0 : v.low === 0 && v.high === 0);
}

/** An absent bytes field reads as protobufjs' shared empty default, which need not be a Uint8Array. */
function bytesText(bytes: unknown, encoding: 'hex' | 'base64'): string {
  if (!(bytes instanceof Uint8Array) || bytes.byteLength === 0) return '';
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString(encoding);
}

function hex(bytes: unknown): string {
  return bytesText(bytes, 'hex');
}

/** Sets out[key] unless the value is the proto3 default. */
function put(out: Json, key: string, value: unknown): void {
  if (value === undefined || value === null || value === 0 || value === '') return;
  if (Array.isArray(value) && value.length === 0) return;
  out[key] = value;
}

/** protobuf's JSON mapping spells non-finite doubles as strings. */
function doubleJson(v: number): number | string {
  if (Number.isFinite(v)) return v;
  return Number.isNaN(v) ? 'NaN' : v > 0 ? 'Infinity' : '-Infinity';
}

function anyValue(v: PbAnyValue, depth: number): Json {
  if (depth > MAX_ANY_VALUE_DEPTH) {
    throw new OtlpPayloadError(`attribute values nested deeper than ${MAX_ANY_VALUE_DEPTH} levels`);
  }
  // A oneof member is set iff decoding read it, so presence (not value) decides, as in JSON.
  if (has(v, 'stringValue')) return { stringValue: text(v.stringValue ?? '') };
  if (has(v, 'boolValue')) return { boolValue: v.boolValue === true };
  if (has(v, 'intValue')) return { intValue: int64Text(v.intValue ?? 0) };
  if (has(v, 'doubleValue')) return { doubleValue: doubleJson(v.doubleValue ?? 0) };
  if (has(v, 'arrayValue')) {
    return { arrayValue: { values: (v.arrayValue?.values ?? []).map((item) => anyValue(item, depth + 1)) } };
  }
  if (has(v, 'kvlistValue'))
    return { kvlistValue: { values: keyValues(v.kvlistValue?.values ?? [], depth + 1) } };
  if (has(v, 'bytesValue')) return { bytesValue: bytesText(v.bytesValue, 'base64') };
  return {};
}

function keyValues(list: readonly PbKeyValue[], depth = 0): Json[] {
  return list.map((kv) => {
    const out: Json = {};
    put(out, 'key', text(kv.key));
    if (kv.value) out.value = anyValue(kv.value, depth);
    return out;
  });
}

function scope(s: PbScope): Json {
  const out: Json = {};
  put(out, 'name', text(s.name));
  put(out, 'version', text(s.version));
  put(out, 'attributes', keyValues(s.attributes ?? []));
  put(out, 'droppedAttributesCount', s.droppedAttributesCount);
  return out;
}

function resource(r: PbResource): Json {
  const out: Json = {};
  put(out, 'attributes', keyValues(r.attributes));
  put(out, 'droppedAttributesCount', r.droppedAttributesCount);
  return out;
}

function nanos(out: Json, key: string, v: Int64): void {
  if (!isZero(v)) out[key] = int64Text(v);
}

function event(e: PbEvent): Json {
  const out: Json = {};
  nanos(out, 'timeUnixNano', e.timeUnixNano);
  put(out, 'name', text(e.name));
  put(out, 'attributes', keyValues(e.attributes));
  put(out, 'droppedAttributesCount', e.droppedAttributesCount);
  return out;
}

function link(l: PbLink): Json {
  const out: Json = {};
  put(out, 'traceId', hex(l.traceId));
  put(out, 'spanId', hex(l.spanId));
  put(out, 'traceState', text(l.traceState));
  put(out, 'attributes', keyValues(l.attributes));
  put(out, 'droppedAttributesCount', l.droppedAttributesCount);
  put(out, 'flags', l.flags);
  return out;
}

function span(s: PbSpan): Json {
  const out: Json = {};
  put(out, 'traceId', hex(s.traceId));
  put(out, 'spanId', hex(s.spanId));
  put(out, 'traceState', text(s.traceState));
  put(out, 'parentSpanId', hex(s.parentSpanId));
  put(out, 'flags', s.flags);
  put(out, 'name', text(s.name));
  put(out, 'kind', s.kind);
  nanos(out, 'startTimeUnixNano', s.startTimeUnixNano);
  nanos(out, 'endTimeUnixNano', s.endTimeUnixNano);
  put(out, 'attributes', keyValues(s.attributes));
  put(out, 'droppedAttributesCount', s.droppedAttributesCount);
  put(out, 'events', s.events.map(event));
  put(out, 'droppedEventsCount', s.droppedEventsCount);
  put(out, 'links', s.links.map(link));
  put(out, 'droppedLinksCount', s.droppedLinksCount);
  if (s.status) {
    const status: Json = {};
    put(status, 'message', text(s.status.message));
    put(status, 'code', s.status.code);
    out.status = status;
  }
  return out;
}

function logRecord(r: PbLogRecord): Json {
  const out: Json = {};
  nanos(out, 'timeUnixNano', r.timeUnixNano);
  nanos(out, 'observedTimeUnixNano', r.observedTimeUnixNano);
  put(out, 'severityNumber', r.severityNumber);
  put(out, 'severityText', text(r.severityText));
  if (r.body) out.body = anyValue(r.body, 0);
  put(out, 'attributes', keyValues(r.attributes));
  put(out, 'droppedAttributesCount', r.droppedAttributesCount);
  put(out, 'flags', r.flags);
  put(out, 'traceId', hex(r.traceId));
  put(out, 'spanId', hex(r.spanId));
  put(out, 'eventName', text(r.eventName));
  return out;
}

/** What the scope groups of both signals share (PbScopeSpans, PbScopeLogs). */
interface PbScopeGroup {
  scope?: PbScope | null;
  instrumentationLibrary?: PbScope | null;
  schemaUrl: string;
}

function scopeGroup<T>(group: PbScopeGroup, itemsKey: string, items: T[], convert: (item: T) => Json): Json {
  const out: Json = {};
  if (group.scope) out.scope = scope(group.scope);
  if (group.instrumentationLibrary) out.instrumentationLibrary = scope(group.instrumentationLibrary);
  put(out, itemsKey, items.map(convert));
  put(out, 'schemaUrl', text(group.schemaUrl));
  return out;
}

/** A resource block of either signal: its current and its legacy (instrumentationLibrary) groups. */
function resourceGroup<G extends PbScopeGroup, I>(
  r: { resource?: PbResource | null; schemaUrl: string },
  keys: { current: string; legacy: string; items: string },
  groups: { current: G[]; legacy: G[] },
  itemsOf: (g: G) => I[],
  convert: (item: I) => Json,
): Json {
  const out: Json = {};
  if (r.resource) out.resource = resource(r.resource);
  put(
    out,
    keys.current,
    groups.current.map((g) => scopeGroup(g, keys.items, itemsOf(g), convert)),
  );
  put(
    out,
    keys.legacy,
    groups.legacy.map((g) => scopeGroup(g, keys.items, itemsOf(g), convert)),
  );
  put(out, 'schemaUrl', text(r.schemaUrl));
  return out;
}

function resourceSpans(rs: PbResourceSpans): Json {
  return resourceGroup(
    rs,
    { current: 'scopeSpans', legacy: 'instrumentationLibrarySpans', items: 'spans' },
    { current: rs.scopeSpans, legacy: rs.instrumentationLibrarySpans },
    (g) => g.spans,
    span,
  );
}

function resourceLogs(rl: PbResourceLogs): Json {
  return resourceGroup(
    rl,
    { current: 'scopeLogs', legacy: 'instrumentationLibraryLogs', items: 'logRecords' },
    { current: rl.scopeLogs, legacy: rl.instrumentationLibraryLogs },
    (g) => g.logRecords,
    logRecord,
  );
}

/**
 * Decodes an OTLP/HTTP protobuf request body for `signal`. A body that is not such a message
 * (truncated, wrong wire types, nested beyond reason) throws OtlpPayloadError.
 */
export function decodeOtlpProtobuf(signal: OtelSignal, body: Uint8Array): Json {
  let message: protobuf.Message;
  try {
    message = REQUEST_TYPES[signal].decode(body);
  } catch (err) {
    // RangeError covers both "index out of range" (truncated) and a stack overflow from nesting.
    const detail =
      err instanceof RangeError && /call stack/i.test(err.message) ? 'nested too deeply' : errorText(err);
    throw new OtlpPayloadError(`invalid protobuf ${signal} request: ${detail}`);
  }
  if (signal === 'traces') {
    const list = (message as unknown as { resourceSpans: PbResourceSpans[] }).resourceSpans;
    return { resourceSpans: list.map(resourceSpans) };
  }
  const list = (message as unknown as { resourceLogs: PbResourceLogs[] }).resourceLogs;
  return { resourceLogs: list.map(resourceLogs) };
}
