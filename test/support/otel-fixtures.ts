import {
  JsonLogsSerializer,
  JsonTraceSerializer,
  ProtobufLogsSerializer,
  ProtobufTraceSerializer,
} from '@opentelemetry/otlp-transformer';

/**
 * OTLP request bodies made by the OpenTelemetry JS SDK's own serializers (protobuf and JSON) from
 * SDK-shaped span and log objects, so the collector is tested against an encoder it did not write.
 */

export type SdkSpan = Parameters<typeof ProtobufTraceSerializer.serializeRequest>[0][number];
export type SdkLogRecord = Parameters<typeof ProtobufLogsSerializer.serializeRequest>[0][number];
type HrTime = [number, number];

export interface FakeSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  startNs: bigint;
  endNs: bigint;
  attributes?: Record<string, unknown>;
  events?: Array<{ name: string; timeNs: bigint; attributes?: Record<string, unknown> }>;
  status?: { code: number; message?: string };
  kind?: number;
}

function hr(ns: bigint): HrTime {
  return [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];
}

/** One resource and scope shared by the spans, as an SDK batch has. */
export function sdkSpans(
  spans: FakeSpan[],
  resourceAttributes: Record<string, unknown> = { 'service.name': 'fixture-agent' },
): SdkSpan[] {
  const resource = { attributes: resourceAttributes };
  const instrumentationScope = { name: 'fixture', version: '1.0.0' };
  return spans.map(
    (s) =>
      // The serializers read only these members of the SDK's ReadableSpan.
      ({
        name: s.name,
        kind: s.kind ?? 0,
        spanContext: () => ({ traceId: s.traceId, spanId: s.spanId, traceFlags: 1 }),
        parentSpanContext: s.parentSpanId
          ? { traceId: s.traceId, spanId: s.parentSpanId, traceFlags: 1 }
          : undefined,
        startTime: hr(s.startNs),
        endTime: hr(s.endNs),
        attributes: s.attributes ?? {},
        status: s.status ?? { code: 0 },
        events: (s.events ?? []).map((e) => ({
          name: e.name,
          time: hr(e.timeNs),
          attributes: e.attributes ?? {},
        })),
        links: [],
        droppedAttributesCount: 0,
        droppedEventsCount: 0,
        droppedLinksCount: 0,
        resource,
        instrumentationScope,
      }) as unknown as SdkSpan,
  );
}

export interface FakeLogRecord {
  timeNs: bigint;
  severityNumber?: number;
  severityText?: string;
  body?: unknown;
  attributes?: Record<string, unknown>;
  traceId?: string;
  spanId?: string;
}

export function sdkLogRecords(
  records: FakeLogRecord[],
  resourceAttributes: Record<string, unknown> = { 'service.name': 'fixture-agent' },
): SdkLogRecord[] {
  const resource = { attributes: resourceAttributes };
  const instrumentationScope = { name: 'fixture-logs', version: '1.0.0' };
  return records.map(
    (r) =>
      ({
        hrTime: hr(r.timeNs),
        hrTimeObserved: hr(r.timeNs + 1000n),
        severityNumber: r.severityNumber,
        severityText: r.severityText,
        body: r.body,
        attributes: r.attributes ?? {},
        droppedAttributesCount: 0,
        spanContext:
          r.traceId && r.spanId ? { traceId: r.traceId, spanId: r.spanId, traceFlags: 1 } : undefined,
        resource,
        instrumentationScope,
      }) as unknown as SdkLogRecord,
  );
}

function bytes(encoded: Uint8Array | undefined): Buffer {
  if (!encoded) throw new Error('serializer produced no body');
  return Buffer.from(encoded);
}

export const encode = {
  tracesProtobuf: (spans: SdkSpan[]) => bytes(ProtobufTraceSerializer.serializeRequest(spans)),
  tracesJson: (spans: SdkSpan[]) => bytes(JsonTraceSerializer.serializeRequest(spans)),
  logsProtobuf: (records: SdkLogRecord[]) => bytes(ProtobufLogsSerializer.serializeRequest(records)),
  logsJson: (records: SdkLogRecord[]) => bytes(JsonLogsSerializer.serializeRequest(records)),
};

/** Deterministic hex ids for fixtures: `hexId(16, 7)` is a trace id, `hexId(8, 7)` a span id (never all zeros). */
export function hexId(bytes: 8 | 16, n: number): string {
  return `f${n.toString(16).padStart(bytes * 2 - 1, '0')}`;
}

/** A trace of `count` spans: span 0 is the root, the others its children, 1 ms apart. */
export function fakeTrace(
  count: number,
  opts: { seed?: number; startNs?: bigint; attributes?: Record<string, unknown> } = {},
): FakeSpan[] {
  const seed = opts.seed ?? 0;
  const start = opts.startNs ?? BigInt(Date.now()) * 1_000_000n;
  const traceId = hexId(16, seed);
  const rootId = hexId(8, seed * 100_000);
  return Array.from({ length: count }, (_, i) => ({
    traceId,
    spanId: i === 0 ? rootId : hexId(8, seed * 100_000 + i),
    parentSpanId: i === 0 ? undefined : rootId,
    name: i === 0 ? 'agent.run' : `step-${i}`,
    startNs: start + BigInt(i) * 1_000_000n,
    endNs: start + BigInt(i) * 1_000_000n + (i === 0 ? BigInt(count) * 1_000_000n : 500_000n),
    attributes: {
      'tool.name': `tool-${i % 5}`,
      query: `question ${i}`,
      n: i,
      ratio: i / 3,
      ok: i % 2 === 0,
      ...opts.attributes,
    },
    events:
      i % 10 === 0
        ? [{ name: 'checkpoint', timeNs: start + BigInt(i) * 1_000_000n + 1000n, attributes: { i } }]
        : [],
    status: { code: i % 7 === 0 ? 2 : 1 },
  }));
}
