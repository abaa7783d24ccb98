import { ProtobufTraceSerializer, JsonTraceSerializer } from '@opentelemetry/otlp-transformer';
import { decodeOtlpProtobuf } from '/work/main/src/otel/otlp-protobuf';
import { flattenSpans } from '/work/main/src/domain/otlp-flatten';
type ReadableSpan = Parameters<typeof ProtobufTraceSerializer.serializeRequest>[0][number];
const resource = { attributes: { 'service.name': 'svc', 'benchmark.run_case_id': '7' }, schemaUrl: undefined } as unknown as ReadableSpan['resource'];
const scope = { name: 'agent', version: '1.0' };
function mk(i: number, parent?: string): ReadableSpan {
  return {
    name: 'span-' + i, kind: 0,
    spanContext: () => ({ traceId: '0af7651916cd43dd8448eb211c80319c', spanId: (i + 1).toString(16).padStart(16, '0'), traceFlags: 1 }),
    parentSpanContext: parent ? { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: parent, traceFlags: 1 } : undefined,
    startTime: [1700000000, 123456789], endTime: [1700000001, 5], hrTime: undefined,
    attributes: { 'tool.name': 'search', n: 42, f: 1.5, b: false, arr: ['a', 'b'] },
    status: { code: 1 }, events: [{ name: 'ev', time: [1700000000, 500], attributes: { q: 'x' } }], links: [],
    droppedAttributesCount: 0, droppedEventsCount: 0, droppedLinksCount: 0, duration: [1, 0], ended: true,
    resource, instrumentationScope: scope,
  } as unknown as ReadableSpan;
}
const spans = [mk(0), mk(1, '0000000000000001')];
const pb = ProtobufTraceSerializer.serializeRequest(spans)!;
const js = JSON.parse(Buffer.from(JsonTraceSerializer.serializeRequest(spans)!).toString());
const dec = decodeOtlpProtobuf('traces', pb);
console.log(JSON.stringify(dec, null, 1).slice(0, 1500));
console.log(JSON.stringify(js).slice(0, 800));
const a = flattenSpans(dec), b = flattenSpans(js);
const strip = (r: any) => ({ ...r, raw: undefined });
console.log(JSON.stringify(a.map(strip)) === JSON.stringify(b.map(strip)));
console.log(JSON.stringify(a[1], null, 1));
