import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { attributeToCase, correlationFromHeaders, decodeAttributes } from '../../src/domain/otlp-attributes';
import { sanitizeDocument } from '../../src/domain/otlp-document';
import { flattenLogs, flattenSpans } from '../../src/domain/otlp-flatten';
import { OtlpPayloadError, signalForPath } from '../../src/domain/otlp-rows';
import { isoFromUnixNanos, normalizeId, normalizeIsoTimestamp } from '../../src/domain/otlp-scalars';
import {
  logsToTrajectory,
  spansToTrajectory,
  toEpochMs,
  type StoredLog,
  type StoredSpan,
} from '../../src/domain/otlp-trajectory';
import { REDACTED } from '../../src/domain/secret-redaction';

const str = (key: string, value: string) => ({ key, value: { stringValue: value } });

function traces(resourceAttrs: object[], spans: object[], scope: object = { name: 'agent', version: '1.2' }) {
  return { resourceSpans: [{ resource: { attributes: resourceAttrs }, scopeSpans: [{ scope, spans }] }] };
}

const SPAN = {
  traceId: '0AF7651916CD43DD8448EB211C80319C',
  spanId: ' b7ad6b7169203331 ',
  name: 'search',
  startTimeUnixNano: '1700000000123456789',
  endTimeUnixNano: 1700000001000000000,
};

describe('flattenSpans (CONTRACT §4.2; ports test_otel_ingest)', () => {
  test('extras are added as strings when neither the span nor its resource has them', () => {
    const rows = flattenSpans(traces([str('service.name', 'openclaw.gateway')], [{ ...SPAN }]), {
      'benchmark.run_case_id': '321',
      'benchmark.experiment_id': '99',
    });
    assert.equal(rows.length, 1);
    const [row] = rows;
    assert.equal(row?.attributes['benchmark.run_case_id'], '321');
    assert.equal(row?.attributes['benchmark.experiment_id'], '99');
    assert.equal(row?.run_case_id, 321);
    assert.equal(row?.experiment_id, 99);
    assert.equal(row?.service_name, 'openclaw.gateway');
  });

  test('extras never override what the resource already says', () => {
    const [row] = flattenSpans(traces([str('benchmark.run_case_id', '111')], [{ ...SPAN }]), {
      'benchmark.run_case_id': '999',
    });
    assert.equal(row?.attributes['benchmark.run_case_id'], '111');
    assert.equal(row?.run_case_id, 111);
  });

  test('row columns: ids hex/trimmed, times ISO with microseconds, scope, status, raw as received', () => {
    const span = {
      ...SPAN,
      parentSpanId: '   ',
      status: { code: 2, message: 'boom' },
      attributes: [str('tool.name', 'search')],
      events: [{ name: 'e1' }],
    };
    const [row] = flattenSpans(
      traces([str('service.name', 'svc')], [span], {
        name: 'lib',
        version: '9',
        attributes: [str('s', 'x')],
      }),
    );
    assert.deepEqual(
      { ...row, raw: undefined },
      {
        trace_id: '0af7651916cd43dd8448eb211c80319c',
        span_id: 'b7ad6b7169203331',
        parent_span_id: null,
        name: 'search',
        service_name: 'svc',
        status: '2',
        attributes: { 'service.name': 'svc', 'tool.name': 'search' },
        resource_attributes: { 'service.name': 'svc' },
        scope_attributes: { s: 'x' },
        scope_name: 'lib',
        scope_version: '9',
        start_time: '2023-11-14T22:13:20.123456Z',
        end_time: '2023-11-14T22:13:21.000000Z',
        run_case_id: null,
        experiment_id: null,
        raw: undefined,
      },
    );
    assert.deepEqual((row?.raw as { events: unknown }).events, [{ name: 'e1' }]);
  });

  test('span attributes win over resource attributes; service.name is added when missing', () => {
    const [withSpanName] = flattenSpans(
      traces(
        [str('service.name', 'resource-svc'), str('k', 'r')],
        [{ ...SPAN, attributes: [str('k', 's'), str('service.name', 'span-svc')] }],
      ),
    );
    assert.equal(withSpanName?.attributes.k, 's');
    assert.equal(withSpanName?.service_name, 'span-svc');
    const [noName] = flattenSpans(traces([], [{ ...SPAN }]));
    assert.equal(noName?.service_name, 'benchmark-agent');
    assert.equal(noName?.attributes['service.name'], 'benchmark-agent');
  });

  test('status: code, else message; code 0 (unset) counts as absent', () => {
    const statusOf = (status: unknown) => flattenSpans(traces([], [{ ...SPAN, status }]))[0]?.status;
    assert.equal(statusOf({ code: 1 }), '1');
    assert.equal(statusOf({ code: 'STATUS_CODE_OK' }), 'STATUS_CODE_OK');
    assert.equal(statusOf({ code: 0, message: 'why' }), 'why');
    assert.equal(statusOf({ code: 0 }), null);
    assert.equal(statusOf(undefined), null);
  });

  test('snake_case documents and the pre-1.0 instrumentationLibrarySpans are read too', () => {
    const snake = {
      resource_spans: [
        {
          resource: { attributes: [{ key: 'service.name', value: { string_value: 'snake' } }] },
          scope_spans: [
            {
              scope: { name: 'x' },
              spans: [
                {
                  trace_id: '0af7651916cd43dd8448eb211c80319c',
                  span_id: 'b7ad6b7169203331',
                  parent_span_id: '00f067aa0ba902b7',
                  start_time_unix_nano: '1700000000000000000',
                  attributes: [{ key: 'n', value: { int_value: '7' } }],
                },
              ],
            },
          ],
          instrumentationLibrarySpans: [
            { instrumentationLibrary: { name: 'old' }, spans: [{ name: 'legacy' }] },
          ],
        },
      ],
    };
    const rows = flattenSpans(snake);
    assert.equal(rows.length, 2);
    assert.equal(rows[0]?.service_name, 'snake');
    assert.equal(rows[0]?.parent_span_id, '00f067aa0ba902b7');
    assert.equal(rows[0]?.attributes.n, 7);
    assert.equal(rows[0]?.name, 'unnamed-span');
    assert.equal(rows[1]?.scope_name, 'old');
  });

  test('run_case_id: unparsable claims become NULL', () => {
    const [row] = flattenSpans(traces([str('benchmark.run_case_id', 'abc')], [{ ...SPAN }]));
    assert.equal(row?.run_case_id, null);
  });

  test('secret-named attributes are redacted, in raw too', () => {
    const [row] = flattenSpans(
      traces([], [{ ...SPAN, attributes: [str('api_key', 'sk-123'), str('q', 'x')] }]),
    );
    assert.equal(row?.attributes.api_key, REDACTED);
    assert.equal(row?.attributes.q, 'x');
    assert.doesNotMatch(JSON.stringify(row?.raw), /sk-123/);
  });

  test('a __proto__ attribute hides nothing; URL query secrets and nested secrets are redacted, in raw too', () => {
    const nested = { kvlistValue: { values: [str('password', 'pw-nested-1'), str('user', 'u')] } };
    const [row] = flattenSpans(
      traces(
        [],
        [
          {
            ...SPAN,
            attributes: [
              { key: '__proto__', value: nested },
              str('password', 'pw-top-2'),
              str('http.url', 'https://api.test/v1?api_key=sk-url-3&q=tokyo'),
              { key: 'gen_ai.usage.input_tokens', value: { intValue: '12' } },
            ],
          },
        ],
      ),
    );
    assert.ok(row);
    assert.deepEqual(Object.getOwnPropertyDescriptor(row.attributes, '__proto__')?.value, {
      password: REDACTED,
      user: 'u',
    });
    assert.equal(row.attributes.password, REDACTED);
    assert.equal(row.attributes['http.url'], `https://api.test/v1?api_key=${REDACTED}&q=tokyo`);
    assert.equal(row.attributes['gen_ai.usage.input_tokens'], 12);
    const stored = JSON.stringify(row);
    assert.doesNotMatch(stored, /pw-nested-1|pw-top-2|sk-url-3/);
  });

  test("a span event's secret attributes are redacted in raw (what the trajectory keeps); a log's secret body too", () => {
    const [span] = flattenSpans(
      traces(
        [],
        [
          {
            ...SPAN,
            events: [
              { name: 'request', attributes: [str('authorization', 'Bearer ev-secret-1'), str('step', 's')] },
              { name: 'plain', attributes: [str('step', 't')] },
            ],
          },
        ],
      ),
    );
    assert.ok(span);
    assert.doesNotMatch(JSON.stringify(span), /ev-secret-1/);
    const events = (span.raw as { events: Array<{ attributes: unknown[] }> }).events;
    assert.deepEqual(events[0]?.attributes, [str('authorization', REDACTED), str('step', 's')]);
    assert.deepEqual(events[1]?.attributes, [str('step', 't')], 'an event without secrets is kept as sent');

    const [log] = flattenLogs({
      resourceLogs: [
        {
          resource: { attributes: [] },
          scopeLogs: [
            {
              scope: { name: 'log' },
              logRecords: [
                { body: { kvlistValue: { values: [str('password', 'body-pw-2'), str('user', 'u')] } } },
              ],
            },
          ],
        },
      ],
    });
    assert.ok(log);
    assert.doesNotMatch(JSON.stringify(log), /body-pw-2/);
  });

  test('simplified {"spans": [...]} form, used only when the OTLP walk found nothing', () => {
    const rows = flattenSpans({
      spans: [
        {
          traceId: '5b8efff798038103d269b633813fc60c',
          span_id: 'eee19b7ec3c1b174',
          name: 'step',
          service_name: 'demo',
          startTime: '2026-01-01T10:00:01.5',
          end_time: '2026-01-01T11:00:02+01:00',
          status: 'ok',
          attributes: { query: 'q', 'benchmark.experiment_id': 4 },
          events: [{ name: 'e' }],
          run_case_id: '77',
        },
      ],
    });
    assert.equal(rows.length, 1);
    const [row] = rows;
    assert.equal(row?.trace_id, '5b8efff798038103d269b633813fc60c');
    assert.equal(row?.service_name, 'demo');
    assert.equal(row?.start_time, '2026-01-01T10:00:01.500000Z');
    assert.equal(row?.end_time, '2026-01-01T10:00:02.000000Z');
    assert.equal(row?.status, 'ok');
    assert.equal(row?.run_case_id, 77);
    assert.equal(row?.experiment_id, 4);
    assert.deepEqual(row?.resource_attributes, {});
    assert.deepEqual((row?.raw as { events: unknown }).events, [{ name: 'e' }]);
  });

  test('documents that are not OTLP are refused with where and why', () => {
    assert.throws(() => flattenSpans([1, 2]), OtlpPayloadError);
    assert.throws(() => flattenSpans({ resourceSpans: 'x' }), /resourceSpans/);
    assert.throws(() => flattenSpans(traces([], [{ ...SPAN, name: 5 }])), /name/);
    assert.throws(
      () => flattenSpans(traces([], [{ ...SPAN, attributes: [{ key: 'k', value: { intValue: 'x' } }] }])),
      /attribute "k"/,
    );
    assert.deepEqual(flattenSpans({}), []);
    assert.deepEqual(flattenSpans(null), []);
  });
});

describe('attribute decoding', () => {
  test('every AnyValue kind, nested kvlist/array, blank keys skipped', () => {
    const decoded = decodeAttributes([
      { key: 's', value: { stringValue: 'x' } },
      { key: 'i', value: { intValue: '42' } },
      { key: 'big', value: { intValue: '9223372036854775807' } },
      { key: 'd', value: { doubleValue: 1.5 } },
      { key: 'nan', value: { doubleValue: 'NaN' } },
      { key: 'b', value: { boolValue: false } },
      { key: 'bytes', value: { bytesValue: 'AAE=' } },
      { key: 'arr', value: { arrayValue: { values: [{ stringValue: 'a' }, { intValue: 1 }] } } },
      {
        key: 'kv',
        value: {
          kvlistValue: { values: [{ key: 'inner', value: { kvlistValue: { values: [str('deep', 'y')] } } }] },
        },
      },
      { key: 'empty', value: {} },
      { key: '  ', value: { stringValue: 'skipped' } },
      { value: { stringValue: 'no key' } },
    ]);
    assert.deepEqual(decoded, {
      s: 'x',
      i: 42,
      big: '9223372036854775807',
      d: 1.5,
      nan: 'NaN',
      b: false,
      bytes: 'AAE=',
      arr: ['a', 1],
      kv: { inner: { deep: 'y' } },
      empty: null,
    });
  });
});

describe('flattenLogs (CONTRACT §4.2)', () => {
  const logs = (resourceAttrs: object[], records: object[]) => ({
    resourceLogs: [
      {
        resource: { attributes: resourceAttrs },
        scopeLogs: [{ scope: { name: 'log' }, logRecords: records }],
      },
    ],
  });

  test('OTLP logs with extras (ports test_otel_ingest logs case)', () => {
    const rows = flattenLogs(logs([], [{ severityText: 'INFO', body: { stringValue: 'hello' } }]), {
      'benchmark.run_case_id': '321',
      'benchmark.experiment_id': '99',
    });
    assert.equal(rows.length, 1);
    const [row] = rows;
    assert.equal(row?.attributes['benchmark.run_case_id'], '321');
    assert.equal(row?.attributes['benchmark.experiment_id'], '99');
    assert.equal(row?.run_case_id, 321);
    assert.equal(row?.body_text, 'hello');
    assert.equal(row?.body_json, null);
    assert.equal(row?.severity_text, 'INFO');
  });

  test('service_name: resource first for logs (spans: merged attributes first)', () => {
    const attrs = [str('service.name', 'record-svc')];
    const [log] = flattenLogs(logs([str('service.name', 'resource-svc')], [{ attributes: attrs }]));
    assert.equal(log?.service_name, 'resource-svc');
    const [span] = flattenSpans(
      traces([str('service.name', 'resource-svc')], [{ ...SPAN, attributes: attrs }]),
    );
    assert.equal(span?.service_name, 'record-svc');
  });

  test('bodies: string → text; structured → JSON text and value; absent → neither', () => {
    const [structured, absent] = flattenLogs(
      logs(
        [],
        [{ body: { kvlistValue: { values: [str('a', 'b')] } } }, { severityNumber: 'SEVERITY_NUMBER_WARN' }],
      ),
    );
    assert.equal(structured?.body_text, '{"a":"b"}');
    assert.deepEqual(structured?.body_json, { a: 'b' });
    assert.equal(absent?.body_text, null);
    assert.equal(absent?.body_json, null);
    assert.equal(absent?.severity_number, 13);
  });

  test('numeric columns never overflow INT', () => {
    const [row] = flattenLogs(
      logs(
        [],
        [
          {
            flags: 4294967295,
            droppedAttributesCount: 1e12,
            severityNumber: 1e12,
            timeUnixNano: '1700000000000000000',
          },
        ],
      ),
    );
    assert.equal(row?.flags, -1);
    assert.equal(row?.dropped_attributes_count, 2147483647);
    assert.equal(row?.severity_number, null);
    assert.equal(row?.event_time, '2023-11-14T22:13:20.000000Z');
  });

  test('simplified {"logs": [...]}: object body → body_json only; item service_name first', () => {
    const [row] = flattenLogs({
      logs: [
        {
          service_name: 'item-svc',
          body: { step: 1 },
          attributes: { 'service.name': 'attr-svc', query: 'q' },
          event_time: '2026-01-01T00:00:00Z',
          run_case_id: 5,
        },
      ],
    });
    assert.equal(row?.service_name, 'item-svc');
    assert.equal(row?.body_text, null);
    assert.deepEqual(row?.body_json, { step: 1 });
    assert.equal(row?.event_time, '2026-01-01T00:00:00.000000Z');
    assert.equal(row?.run_case_id, 5);
  });
});

describe('correlation and attribution', () => {
  test('x-benchmark-* headers (case-insensitive, either spelling) → attribute values', () => {
    assert.deepEqual(
      correlationFromHeaders({
        'X-Run-Case-Id': ' 5 ',
        'x-benchmark-experiment-id': '6',
        'x-data-item-id': ['7'],
      }),
      { 'benchmark.run_case_id': '5', 'benchmark.data_item_id': '7', 'benchmark.experiment_id': '6' },
    );
  });

  test('attributeToCase overrides every claim in attributes, resource attributes and columns', () => {
    const rows = flattenSpans(
      traces(
        [str('benchmark.run_case_id', '999')],
        [{ ...SPAN, attributes: [str('benchmark.experiment_id', '888')] }],
      ),
    );
    const [row] = attributeToCase(rows, { runCaseId: 1, experimentId: 2, dataItemId: 3 });
    assert.equal(row?.run_case_id, 1);
    assert.equal(row?.experiment_id, 2);
    assert.equal(row?.attributes['benchmark.run_case_id'], '1');
    assert.equal(row?.attributes['benchmark.experiment_id'], '2');
    assert.equal(row?.attributes['benchmark.data_item_id'], '3');
    assert.equal(row?.resource_attributes['benchmark.run_case_id'], '1');
  });

  test('ingest paths', () => {
    assert.equal(signalForPath('/api/otel/v1/traces'), 'traces');
    assert.equal(signalForPath('/v1/logs'), 'logs');
    assert.equal(signalForPath('/v1/metrics'), null);
  });
});

describe('scalars', () => {
  test('ids: hex lowercased, base64 of the right length converted, blank → null, anything else refused', () => {
    assert.equal(normalizeId('CgsMDQ4PEBESExQVFhcYGQ==', 16, 'traceId'), '0a0b0c0d0e0f10111213141516171819');
    assert.equal(normalizeId('AAECAwQFBgc=', 8, 'spanId'), '0001020304050607');
    assert.equal(normalizeId('B7AD6B7169203331', 8, 'spanId'), 'b7ad6b7169203331');
    assert.equal(normalizeId('', 8, 'spanId'), null);
    assert.equal(normalizeId(42, 8, 'spanId'), null);
    assert.equal(normalizeId('0000000000000000', 8, 'parentSpanId', 'absent'), null);
    for (const bad of [
      'custom-id',
      'zz'.repeat(8),
      'a'.repeat(15),
      'a'.repeat(17),
      '0'.repeat(16),
      'f'.repeat(100_000),
    ]) {
      assert.throws(
        () => normalizeId(bad, 8, 'spanId'),
        (err: unknown) =>
          err instanceof OtlpPayloadError &&
          /^spanId must be 16 hex characters/.test(err.message) &&
          err.message.length < 200,
        bad.slice(0, 20),
      );
    }
    assert.throws(() => normalizeId('0'.repeat(32), 16, 'traceId'), /traceId must be 32 hex characters/);
  });

  test('flattening refuses a document with one bad id as a whole', () => {
    assert.throws(() => flattenSpans(traces([], [{ ...SPAN, traceId: 'zz'.repeat(16) }])), OtlpPayloadError);
    assert.throws(() => flattenSpans(traces([], [{ ...SPAN, spanId: '0'.repeat(16) }])), /spanId/);
    assert.throws(() => flattenSpans({ spans: [{ trace_id: 'abc', name: 'x' }] }), /trace_id/);
    const root = flattenSpans(traces([], [{ ...SPAN, parentSpanId: '0'.repeat(16) }]));
    assert.equal(root[0]?.parent_span_id, null);
  });

  test('epoch nanoseconds → ISO; ≤0, junk and years past 9999 → null', () => {
    assert.equal(isoFromUnixNanos('1'), '1970-01-01T00:00:00.000000Z');
    assert.equal(isoFromUnixNanos('1700000000123456789'), '2023-11-14T22:13:20.123456Z');
    assert.equal(isoFromUnixNanos(0), null);
    assert.equal(isoFromUnixNanos('-5'), null);
    assert.equal(isoFromUnixNanos('12e3'), null);
    assert.equal(isoFromUnixNanos('999999999999999999999999'), null);
  });

  test('ISO strings: Z, offsets, naive = UTC; impossible dates → null', () => {
    assert.equal(normalizeIsoTimestamp('2026-01-01T10:00:00Z'), '2026-01-01T10:00:00.000000Z');
    assert.equal(normalizeIsoTimestamp('2026-01-01 10:00:00.1234567-02:30'), '2026-01-01T12:30:00.123456Z');
    assert.equal(normalizeIsoTimestamp('2026-01-01T10:00'), '2026-01-01T10:00:00.000000Z');
    assert.equal(normalizeIsoTimestamp('2026-02-30T10:00:00Z'), null);
    assert.equal(normalizeIsoTimestamp('yesterday'), null);
  });

  test('toEpochMs: Date, ISO (naive = UTC), numbers by magnitude (today in ns, µs, ms and s)', () => {
    assert.equal(toEpochMs(new Date(1234)), 1234);
    assert.equal(toEpochMs('2026-01-01T00:00:00'), Date.UTC(2026, 0, 1));
    assert.equal(toEpochMs(1_700_000_000_000_000_000), 1_700_000_000_000);
    assert.equal(toEpochMs(1_700_000_000_000_000), 1_700_000_000_000);
    assert.equal(toEpochMs(1_700_000_000_000), 1_700_000_000_000);
    assert.equal(toEpochMs(1_700_000_000), 1_700_000_000_000);
    assert.equal(toEpochMs('nope'), 0);
    assert.equal(toEpochMs(null), 0);
  });
});

describe('sanitizeDocument', () => {
  test('NUL and lone surrogates become U+FFFD, in keys too; valid pairs survive', () => {
    const doc = sanitizeDocument(JSON.parse('{"a\\u0000":["x\\u0000y","\\ud800","\\ud83d\\ude00"]}'));
    assert.deepEqual(doc, { 'a\ufffd': ['x\ufffdy', '\ufffd', '😀'] });
  });

  test('nesting beyond the limit is refused without recursion', () => {
    const deep = JSON.parse(`${'['.repeat(100_000)}${']'.repeat(100_000)}`) as unknown;
    assert.throws(() => sanitizeDocument(deep), OtlpPayloadError);
    assert.doesNotThrow(() => sanitizeDocument(JSON.parse(`${'['.repeat(50)}${']'.repeat(50)}`)));
  });
});

describe('spansToTrajectory (CONTRACT §4.4; ports test_otel_mapper)', () => {
  const stored = (over: Partial<StoredSpan>): StoredSpan => ({
    span_id: null,
    parent_span_id: null,
    name: null,
    status: null,
    attributes: {},
    start_time: null,
    end_time: null,
    created_at: null,
    raw: {},
    ...over,
  });

  test('two spans out of order → root first, child with its latency, picked attributes and events', () => {
    const events = [{ name: 'searched', attributes: [str('hits', '3')] }];
    const steps = spansToTrajectory([
      stored({
        span_id: 'b',
        parent_span_id: 'a',
        name: 'tool',
        start_time: new Date('2026-01-01T10:00:02Z'),
        end_time: new Date('2026-01-01T10:00:03Z'),
        attributes: { 'tool.name': 'search', 'not.picked': 1 },
        raw: { events },
      }),
      stored({
        span_id: 'a',
        name: 'root',
        start_time: new Date('2026-01-01T10:00:01Z'),
        end_time: new Date('2026-01-01T10:00:04Z'),
        status: '1',
      }),
    ]);
    assert.equal(steps.length, 2);
    assert.equal(steps[0]?.span_id, 'a');
    assert.equal(steps[0]?.step, 1);
    assert.equal(steps[0]?.status, '1');
    assert.deepEqual(steps[1], {
      step: 2,
      span_id: 'b',
      parent_span_id: 'a',
      name: 'tool',
      start_time_ms: Date.parse('2026-01-01T10:00:02Z'),
      end_time_ms: Date.parse('2026-01-01T10:00:03Z'),
      latency_ms: 1000,
      status: null,
      attributes: { 'tool.name': 'search' },
      events,
    });
  });

  test('within one millisecond, microseconds order a parent before its first child', () => {
    const steps = spansToTrajectory([
      stored({
        span_id: 'child',
        start_time: '2026-01-01T00:00:00.000200Z',
        end_time: '2026-01-01T00:00:00.000900Z',
      }),
      stored({
        span_id: 'root',
        start_time: '2026-01-01T00:00:00.000100Z',
        end_time: '2026-01-01T00:00:01.000000Z',
      }),
    ]);
    assert.deepEqual(
      steps.map((s) => [s.span_id, s.start_time_ms, s.latency_ms]),
      [
        ['root', Date.UTC(2026, 0, 1), 1000],
        ['child', Date.UTC(2026, 0, 1), 0],
      ],
    );
  });

  test('missing times: start from created_at, end = start; ties broken by end then span_id', () => {
    const created = new Date('2026-01-01T00:00:00Z');
    const steps = spansToTrajectory([
      stored({ span_id: 'z', created_at: created }),
      stored({ span_id: 'y', created_at: created }),
      stored({ span_id: 'x', created_at: created, end_time: new Date('2026-01-01T00:00:05Z') }),
    ]);
    assert.deepEqual(
      steps.map((s) => [s.span_id, s.name, s.latency_ms, s.events]),
      [
        ['y', 'unnamed-span', 0, []],
        ['z', 'unnamed-span', 0, []],
        ['x', 'unnamed-span', 5000, []],
      ],
    );
  });
});

describe('logsToTrajectory (CONTRACT §4.4)', () => {
  test('log step shape: body, severity, service and the picked keys as event attributes', () => {
    const log = (over: Partial<StoredLog>): StoredLog => ({
      trace_id: null,
      span_id: null,
      service_name: 'svc',
      severity_text: 'INFO',
      body_text: null,
      body_json: null,
      attributes: {},
      event_time: null,
      observed_time: null,
      created_at: null,
      ...over,
    });
    const steps = logsToTrajectory([
      log({
        body_text: '  ',
        body_json: { a: 1 },
        event_time: new Date(2000),
        attributes: { final_answer: 'x', model: 'm' },
      }),
      log({ severity_text: null, service_name: null, observed_time: new Date(1000), body_text: 'first' }),
    ]);
    assert.deepEqual(steps[0], {
      step: 1,
      source: 'otel.log',
      trace_id: null,
      span_id: null,
      name: 'log',
      start_time_ms: 1000,
      end_time_ms: 1000,
      latency_ms: 0,
      status: null,
      attributes: {},
      events: [
        {
          name: 'log',
          attributes: [
            { key: 'body', value: 'first' },
            { key: 'severity_text', value: '' },
            { key: 'service.name', value: '' },
          ],
        },
      ],
    });
    assert.equal(steps[1]?.name, 'INFO');
    assert.deepEqual(steps[1]?.attributes, { model: 'm', final_answer: 'x' });
    assert.deepEqual(steps[1]?.events[0]?.attributes, [
      { key: 'body', value: { a: 1 } },
      { key: 'severity_text', value: 'INFO' },
      { key: 'service.name', value: 'svc' },
      { key: 'final_answer', value: 'x' },
    ]);
  });
});
