import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import protobuf from 'protobufjs';
import { sanitizeDocument } from '../../src/domain/otlp-document';
import { flattenLogs, flattenSpans } from '../../src/domain/otlp-flatten';
import { OtlpPayloadError } from '../../src/domain/otlp-rows';
import { decodeOtlpProtobuf, MAX_ANY_VALUE_DEPTH } from '../../src/otel/otlp-protobuf';
import { encode, fakeTrace, hexId, sdkLogRecords, sdkSpans } from '../support/otel-fixtures';

const ANY_VALUE_MEMBERS = new Set(['stringValue', 'boolValue', 'intValue', 'doubleValue', 'bytesValue']);

/**
 * What a canonical OTLP JSON client sends for the same message: proto3 defaults (0, "", [])
 * omitted, 64-bit integers as decimal strings. The JS SDK's JSON serializer writes defaults out.
 */
function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (typeof value !== 'object' || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) {
    if (ANY_VALUE_MEMBERS.has(key)) {
      out[key] = key === 'intValue' ? String(item) : item;
      continue;
    }
    if (item === undefined || item === null || item === 0 || item === '') continue;
    if (Array.isArray(item) && item.length === 0) continue;
    out[key] = canonical(item);
  }
  return out;
}

function json(body: Buffer): unknown {
  return sanitizeDocument(JSON.parse(body.toString('utf8')));
}

/** A length-delimited field: tag, length, bytes. */
function field(fieldNumber: number, bytes: Uint8Array): Buffer {
  const head = protobuf.Writer.create()
    .uint32((fieldNumber << 3) | 2)
    .uint32(bytes.length)
    .finish();
  return Buffer.concat([head, bytes]);
}

/**
 * Hand-made wire bytes: an ExportTraceServiceRequest with one span whose attribute value nests
 * `depth` arrays. Built inside-out from length prefixes only, so 10^5 levels take linear time.
 */
function nestedAttributeRequest(depth: number): Uint8Array {
  const leaf = field(1, Buffer.from('leaf'));
  const prefixes: Uint8Array[] = [];
  let length = leaf.length;
  for (let i = 0; i < depth; i++) {
    const arrayPrefix = protobuf.Writer.create()
      .uint32((1 << 3) | 2)
      .uint32(length)
      .finish();
    const anyValuePrefix = protobuf.Writer.create()
      .uint32((5 << 3) | 2)
      .uint32(arrayPrefix.length + length)
      .finish();
    prefixes.push(arrayPrefix, anyValuePrefix);
    length += arrayPrefix.length + anyValuePrefix.length;
  }
  const anyValue = Buffer.concat([...prefixes.reverse(), leaf]);
  const keyValue = Buffer.concat([field(1, Buffer.from('k')), field(2, anyValue)]);
  const span = Buffer.concat([field(5, Buffer.from('deep')), field(9, keyValue)]);
  return field(1, field(2, field(2, span)));
}

describe('decodeOtlpProtobuf against the OpenTelemetry JS serializers', () => {
  const spans = sdkSpans(
    fakeTrace(25, {
      seed: 3,
      startNs: 1_700_000_000_123_456_789n,
      attributes: {
        nested: ['a', 'b'],
        big: 2 ** 40,
        negative: -(2 ** 40) - 1,
        'gen_ai.usage.input_tokens': 10,
      },
    }),
    { 'service.name': 'fixture-agent', 'benchmark.run_case_id': '42', 'benchmark.experiment_id': '7' },
  );

  test('protobuf and JSON bodies of the same spans give identical rows; ids are hex in both', () => {
    const fromProtobuf = flattenSpans(decodeOtlpProtobuf('traces', encode.tracesProtobuf(spans)));
    const fromJson = flattenSpans(json(encode.tracesJson(spans)));
    assert.equal(fromProtobuf.length, 25);
    const withoutRaw = (rows: typeof fromJson) => rows.map((r) => ({ ...r, raw: null }));
    assert.deepEqual(withoutRaw(fromProtobuf), withoutRaw(fromJson));
    assert.deepEqual(
      fromProtobuf.map((r) => canonical(r.raw)),
      fromJson.map((r) => canonical(r.raw)),
    );
    for (const row of fromProtobuf) {
      assert.match(row.trace_id ?? '', /^[0-9a-f]{32}$/);
      assert.match(row.span_id ?? '', /^[0-9a-f]{16}$/);
      assert.equal(row.run_case_id, 42);
    }
    assert.equal(fromProtobuf[1]?.parent_span_id, hexId(8, 300_000));
    assert.equal(fromProtobuf[0]?.start_time, '2023-11-14T22:13:20.123456Z');
  });

  test('…and identical raw too when the JSON client omits defaults, as canonical OTLP JSON does', () => {
    const fromProtobuf = flattenSpans(decodeOtlpProtobuf('traces', encode.tracesProtobuf(spans)));
    const fromCanonicalJson = flattenSpans(canonical(json(encode.tracesJson(spans))));
    assert.deepEqual(fromProtobuf, fromCanonicalJson);
  });

  test('logs: protobuf and JSON give identical rows', () => {
    const records = sdkLogRecords(
      [
        {
          timeNs: 1_700_000_000_000_000_001n,
          severityNumber: 9,
          severityText: 'INFO',
          body: 'hello',
          attributes: { query: 'q' },
        },
        {
          timeNs: 1_700_000_000_000_000_002n,
          severityNumber: 17,
          severityText: 'ERROR',
          body: { step: 2, tools: ['a'] },
          traceId: hexId(16, 1),
          spanId: hexId(8, 1),
        },
      ],
      { 'service.name': 'log-agent', 'benchmark.run_case_id': '5' },
    );
    const fromProtobuf = flattenLogs(decodeOtlpProtobuf('logs', encode.logsProtobuf(records)));
    const fromJson = flattenLogs(canonical(json(encode.logsJson(records))));
    assert.equal(fromProtobuf.length, 2);
    assert.deepEqual(fromProtobuf, fromJson);
    assert.equal(fromProtobuf[1]?.trace_id, hexId(16, 1));
    assert.deepEqual(fromProtobuf[1]?.body_json, { step: 2, tools: ['a'] });
    assert.equal(fromProtobuf[0]?.run_case_id, 5);
  });

  test('an empty body is an empty request', () => {
    assert.deepEqual(decodeOtlpProtobuf('traces', new Uint8Array()), { resourceSpans: [] });
  });
});

describe('decodeOtlpProtobuf on bad input', () => {
  test('truncated and mistyped bodies are OtlpPayloadErrors', () => {
    const body = encode.tracesProtobuf(sdkSpans(fakeTrace(3)));
    for (const cut of [1, 7, Math.floor(body.length / 2), body.length - 1]) {
      assert.throws(
        () => decodeOtlpProtobuf('traces', body.subarray(0, cut)),
        OtlpPayloadError,
        `cut at ${cut}`,
      );
    }
    assert.throws(() => decodeOtlpProtobuf('traces', Buffer.from('{"resourceSpans":[]}')), OtlpPayloadError);
  });

  test('attribute values nested beyond the limit are refused, however deep', () => {
    assert.doesNotThrow(() => decodeOtlpProtobuf('traces', nestedAttributeRequest(MAX_ANY_VALUE_DEPTH - 1)));
    assert.throws(
      () => decodeOtlpProtobuf('traces', nestedAttributeRequest(MAX_ANY_VALUE_DEPTH + 1)),
      /nested/,
    );
    assert.throws(() => decodeOtlpProtobuf('traces', nestedAttributeRequest(100_000)), OtlpPayloadError);
  });

  test('NUL characters are made storable', () => {
    const spansWithNul = sdkSpans([{ ...fakeTrace(1)[0]!, name: 'a\u0000b' }]);
    const [row] = flattenSpans(decodeOtlpProtobuf('traces', encode.tracesProtobuf(spansWithNul)));
    assert.equal(row?.name, 'a\ufffdb');
  });

  test('pre-1.0 instrumentation_library_spans (field 1000) are read', () => {
    const span = protobuf.Writer.create()
      .uint32((5 << 3) | 2)
      .string('legacy')
      .finish();
    const library = protobuf.Writer.create()
      .uint32((1 << 3) | 2)
      .string('old-lib')
      .finish();
    const group = protobuf.Writer.create()
      .uint32((1 << 3) | 2)
      .bytes(library)
      .uint32((2 << 3) | 2)
      .bytes(span)
      .finish();
    const resourceSpans = protobuf.Writer.create()
      .uint32((1000 << 3) | 2)
      .bytes(group)
      .finish();
    const request = protobuf.Writer.create()
      .uint32((1 << 3) | 2)
      .bytes(resourceSpans)
      .finish();
    const [row] = flattenSpans(decodeOtlpProtobuf('traces', request));
    assert.equal(row?.name, 'legacy');
    assert.equal(row?.scope_name, 'old-lib');
  });
});
