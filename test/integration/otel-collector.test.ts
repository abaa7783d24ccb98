import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { gzipSync } from 'node:zlib';
import {
  BODY_READ_TIMEOUT_MS,
  caseOtelEnv,
  INGEST_TOKEN_HEADER,
  OtelCollector,
} from '../../src/otel/otel-collector';
import { createTestDatabase, type TestDatabase } from '../support/database';
import { encode, fakeTrace, sdkLogRecords, sdkSpans } from '../support/otel-fixtures';
import { captureLogger } from './docker-fixtures';

const MAX_BODY = 256 * 1024;

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  json: Record<string, unknown>;
}

function parseJson(text: string): Record<string, unknown> {
  try {
    return text ? (JSON.parse(text) as Record<string, unknown>) : {};
  } catch {
    return { unparsable: text };
  }
}

/** A raw HTTP POST: `chunked` sends the body in pieces without Content-Length. */
function post(
  port: number,
  path: string,
  body: Buffer | string,
  headers: Record<string, string> = {},
  opts: { chunked?: boolean; method?: string } = {},
): Promise<Reply> {
  const payload = typeof body === 'string' ? Buffer.from(body) : body;
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: opts.method ?? 'POST',
        headers: opts.chunked ? headers : { ...headers, 'content-length': String(payload.length) },
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode ?? 0, headers: res.headers, json: parseJson(text) });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (opts.chunked) {
      for (let i = 0; i < payload.length; i += 1000) req.write(payload.subarray(i, i + 1000));
      req.end();
    } else {
      req.end(payload);
    }
  });
}

const JSON_CT = { 'content-type': 'application/json' };
const PROTOBUF_CT = { 'content-type': 'application/x-protobuf' };

function claimingTrace(runCaseId: number, count = 3) {
  return sdkSpans(fakeTrace(count, { seed: runCaseId }), {
    'service.name': 'collector-test',
    'benchmark.run_case_id': String(runCaseId),
    'benchmark.experiment_id': '1',
  });
}

describe('OtelCollector (HTTP, real Postgres)', () => {
  let db: TestDatabase;
  let collector: OtelCollector;
  let port: number;
  const { log, lines } = captureLogger();

  async function stored(where: string, params: unknown[] = []): Promise<Array<Record<string, unknown>>> {
    const { rows } = await db.pool.query(`SELECT * FROM otel_traces WHERE ${where} ORDER BY id`, params);
    return rows as Array<Record<string, unknown>>;
  }
  async function totalRows(): Promise<number> {
    const { rows } = await db.pool.query<{ n: number }>(
      'SELECT ((SELECT count(*) FROM otel_traces) + (SELECT count(*) FROM otel_logs))::int AS n',
    );
    return rows[0]?.n ?? 0;
  }

  before(async () => {
    db = await createTestDatabase();
    collector = new OtelCollector({
      pool: db.pool,
      log,
      host: '127.0.0.1',
      port: 0,
      maxBodyBytes: MAX_BODY,
      allowUntokened: false,
    });
    ({ port } = await collector.start());
  });
  after(async () => {
    await collector.stop();
    await db.drop();
  });

  test('OTLP JSON with a token: 200 with the original response shape, rows attributed to the token', async () => {
    const token = collector.issueToken({ runCaseId: 201, experimentId: 20, dataItemId: 2001 });
    const reply = await post(port, '/api/otel/v1/traces', encode.tracesJson(claimingTrace(201)), {
      ...JSON_CT,
      [INGEST_TOKEN_HEADER]: token,
    });
    assert.equal(reply.status, 200);
    assert.deepEqual(reply.json, { ok: true, mock: 'otel-default', inserted: 3 });
    assert.equal(reply.headers['x-mock-gateway'], 'otel-default');
    assert.match(String(reply.headers['content-type']), /application\/json/);
    const rows = await stored('run_case_id = 201');
    assert.equal(rows.length, 3);
    assert.equal(Number(rows[0]?.experiment_id), 20);
    assert.equal((rows[0]?.attributes as Record<string, unknown>)['benchmark.data_item_id'], '2001');
    assert.ok(lines.some((l) => l.code === 'OTEL_INGEST_OK' && l.inserted === 3 && l.run_case_id === 201));
  });

  test('protobuf, gzip and chunked uploads on the SDK paths (/v1/traces, /v1/logs)', async () => {
    const token = collector.issueToken({ runCaseId: 202, experimentId: 20, dataItemId: 2002 });
    const auth = { [INGEST_TOKEN_HEADER]: token };
    const spans = claimingTrace(202, 40);
    const traces = await post(
      port,
      '/v1/traces',
      gzipSync(encode.tracesProtobuf(spans)),
      { ...PROTOBUF_CT, 'content-encoding': 'gzip', ...auth },
      { chunked: true },
    );
    assert.equal(traces.status, 200, JSON.stringify(traces.json));
    assert.equal(traces.json.inserted, 40);
    const logs = await post(
      port,
      '/v1/logs',
      encode.logsProtobuf(
        sdkLogRecords([{ timeNs: BigInt(Date.now()) * 1_000_000n, severityText: 'INFO', body: 'hi' }]),
      ),
      { ...PROTOBUF_CT, ...auth },
    );
    assert.equal(logs.status, 200);
    assert.equal(logs.json.inserted, 1);
    const { rows } = await db.pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM otel_logs WHERE run_case_id = 202',
    );
    assert.equal(rows[0]?.n, 1);
    const ids = await stored('run_case_id = 202');
    assert.match(String(ids[0]?.trace_id), /^[0-9a-f]{32}$/);
  });

  test('a token wins over what the body claims', async () => {
    const token = collector.issueToken({ runCaseId: 203, experimentId: 21, dataItemId: 2003 });
    const reply = await post(port, '/api/otel/v1/traces', encode.tracesJson(claimingTrace(999)), {
      ...JSON_CT,
      [INGEST_TOKEN_HEADER]: token,
    });
    assert.equal(reply.status, 200);
    assert.equal((await stored('run_case_id = 999')).length, 0);
    const rows = await stored('run_case_id = 203');
    assert.equal(rows.length, 3);
    assert.equal((rows[0]?.attributes as Record<string, unknown>)['benchmark.run_case_id'], '203');
    assert.equal((rows[0]?.resource_attributes as Record<string, unknown>)['benchmark.run_case_id'], '203');
  });

  test('untokened posts from an unbound source are refused (401, nothing stored); unknown and revoked tokens 403', async () => {
    const before = await totalRows();
    const untokened = await post(port, '/api/otel/v1/traces', encode.tracesJson(claimingTrace(204)), JSON_CT);
    assert.equal(untokened.status, 401);
    assert.match(String(untokened.json.error), /no ingest token .* not a live case's container/);
    assert.equal(untokened.json.ok, false);
    const unknown = await post(port, '/api/otel/v1/traces', encode.tracesJson(claimingTrace(204)), {
      ...JSON_CT,
      [INGEST_TOKEN_HEADER]: 'guessed',
    });
    assert.equal(unknown.status, 403);
    const token = collector.issueToken({ runCaseId: 204, experimentId: 1, dataItemId: 1 });
    collector.revokeToken(token);
    const revoked = await post(port, '/api/otel/v1/traces', encode.tracesJson(claimingTrace(204)), {
      ...JSON_CT,
      [INGEST_TOKEN_HEADER]: token,
    });
    assert.equal(revoked.status, 403);
    assert.equal(await totalRows(), before);
    assert.ok(lines.some((l) => l.code === 'E_OTEL_INGEST_REJECTED' && l.status === 403 && l.level === 40));
  });

  test('a bound source IP attributes untokened posts to its case until unbound', async () => {
    const token = collector.issueToken({ runCaseId: 205, experimentId: 22, dataItemId: 2005 });
    collector.bindSource('::ffff:127.0.0.1', token);
    const bound = await post(port, '/api/otel/v1/traces', encode.tracesJson(claimingTrace(777)), JSON_CT);
    assert.equal(bound.status, 200);
    assert.equal((await stored('run_case_id = 205')).length, 3);
    collector.unbindSource('127.0.0.1');
    const unbound = await post(port, '/api/otel/v1/traces', encode.tracesJson(claimingTrace(777)), JSON_CT);
    assert.equal(unbound.status, 401);
    assert.equal((await stored('run_case_id = 777')).length, 0);
    assert.throws(() => collector.bindSource('10.0.0.1', 'not-a-token'), /unknown ingest token/);
  });

  test('allowUntokened keeps the original behaviour: claims and x-benchmark-* headers correlate', async () => {
    const open = new OtelCollector({
      pool: db.pool,
      log,
      host: '127.0.0.1',
      port: 0,
      maxBodyBytes: MAX_BODY,
      allowUntokened: true,
    });
    const { port: openPort } = await open.start();
    try {
      const claimed = await post(
        openPort,
        '/api/otel/v1/traces',
        encode.tracesJson(claimingTrace(206)),
        JSON_CT,
      );
      assert.equal(claimed.status, 200);
      assert.equal((await stored('run_case_id = 206')).length, 3);
      const simplified = JSON.stringify({ spans: [{ name: 'by-header', span_id: 'a1b2c3d4e5f60718' }] });
      const byHeader = await post(openPort, '/api/otel/v1/traces', simplified, {
        ...JSON_CT,
        'x-benchmark-run-case-id': '207',
        'x-benchmark-experiment-id': '23',
      });
      assert.equal(byHeader.status, 200);
      const [row] = await stored('run_case_id = 207');
      assert.equal(row?.name, 'by-header');
      assert.equal(Number(row?.experiment_id), 23);
    } finally {
      await open.stop();
    }
  });

  test('empty and span-less bodies are fine (0 rows); without a token they are refused like any other', async () => {
    const token = collector.issueToken({ runCaseId: 211, experimentId: 1, dataItemId: 1 });
    const auth = { ...JSON_CT, [INGEST_TOKEN_HEADER]: token };
    for (const body of ['', '{}', '{"resourceSpans":[]}']) {
      const reply = await post(port, '/api/otel/v1/traces', body, auth);
      assert.equal(reply.status, 200, body);
      assert.equal(reply.json.inserted, 0);
      assert.equal((await post(port, '/api/otel/v1/traces', body, JSON_CT)).status, 401, body);
    }
    const logs = await post(port, '/api/otel/v1/logs', '{"resourceLogs":[]}', auth);
    assert.deepEqual(logs.json, { ok: true, mock: 'otel-default', inserted: 0 });
  });

  test('only OTLP content types (415 otherwise); OTEL_INGEST_ANY_CONTENT_TYPE reads the rest as JSON', async () => {
    const token = collector.issueToken({ runCaseId: 212, experimentId: 1, dataItemId: 1 });
    const body = encode.tracesJson(claimingTrace(212, 2));
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', '']) {
      const headers: Record<string, string> = { [INGEST_TOKEN_HEADER]: token };
      if (type !== '') headers['content-type'] = type;
      const refused = await post(port, '/api/otel/v1/traces', body, headers);
      assert.equal(refused.status, 415, type);
      assert.match(String(refused.json.error), /application\/json or application\/x-protobuf/);
    }
    const charset = await post(port, '/api/otel/v1/traces', body, {
      'content-type': 'Application/JSON; charset=utf-8',
      [INGEST_TOKEN_HEADER]: token,
    });
    assert.equal(charset.status, 200);
    assert.equal((await stored('run_case_id = 212')).length, 2);
    const lenient = new OtelCollector({
      pool: db.pool,
      log,
      host: '127.0.0.1',
      port: 0,
      maxBodyBytes: MAX_BODY,
      allowUntokened: false,
      anyContentType: true,
    });
    const { port: lenientPort } = await lenient.start();
    try {
      const other = lenient.issueToken({ runCaseId: 213, experimentId: 1, dataItemId: 1 });
      const reply = await post(lenientPort, '/api/otel/v1/traces', encode.tracesJson(claimingTrace(213, 2)), {
        'content-type': 'application/x-www-form-urlencoded',
        [INGEST_TOKEN_HEADER]: other,
      });
      assert.equal(reply.status, 200);
      assert.equal((await stored('run_case_id = 213')).length, 2);
    } finally {
      await lenient.stop();
    }
  });

  test('ids must be hex of their exact length and not all zero: 400 naming the field, nothing stored', async () => {
    const token = collector.issueToken({ runCaseId: 214, experimentId: 1, dataItemId: 1 });
    const auth = { ...JSON_CT, [INGEST_TOKEN_HEADER]: token };
    const span = (ids: Record<string, string>) =>
      JSON.stringify({
        resourceSpans: [
          {
            scopeSpans: [
              { spans: [{ name: 's', traceId: 'ab'.repeat(16), spanId: 'cd'.repeat(8), ...ids }] },
            ],
          },
        ],
      });
    const cases: Array<[Record<string, string>, RegExp]> = [
      [{ traceId: 'zz'.repeat(16) }, /traceId must be 32 hex/],
      [{ traceId: 'a'.repeat(31) }, /traceId/],
      [{ traceId: '0'.repeat(32) }, /traceId/],
      [{ spanId: 'f'.repeat(100_000) }, /spanId must be 16 hex .*100000 chars/],
      [{ parentSpanId: 'xyz' }, /parentSpanId/],
    ];
    for (const [ids, message] of cases) {
      const reply = await post(port, '/api/otel/v1/traces', span(ids), auth);
      assert.equal(reply.status, 400, JSON.stringify(ids).slice(0, 80));
      assert.match(String(reply.json.error), message);
    }
    assert.equal((await stored('run_case_id = 214')).length, 0);
  });

  test('refused before the body is read: a 401 arrives while the upload is still going, a slow upload gets 408', async () => {
    const firstAnswer = (headers: Record<string, string>) =>
      new Promise<number>((resolve, reject) => {
        const req = http.request(
          { host: '127.0.0.1', port, path: '/v1/traces', method: 'POST', headers, agent: false },
          (res) => {
            resolve(res.statusCode ?? 0);
            res.resume();
            req.destroy();
          },
        );
        req.on('error', reject);
        // Headers and a first piece of a "16 MB" body, then nothing more.
        req.write('['.repeat(1024));
      });
    assert.equal(await firstAnswer({ ...JSON_CT, 'content-length': String(16 << 20) }), 401);
    const token = collector.issueToken({ runCaseId: 215, experimentId: 1, dataItemId: 1 });
    const started = Date.now();
    const slow = await firstAnswer({
      ...JSON_CT,
      'transfer-encoding': 'chunked',
      [INGEST_TOKEN_HEADER]: token,
    });
    assert.equal(slow, 400, 'nested [ refused as it arrives');
    const stalled = await new Promise<number>((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port,
          path: '/v1/traces',
          method: 'POST',
          agent: false,
          headers: { ...JSON_CT, 'content-length': '100', [INGEST_TOKEN_HEADER]: token },
        },
        (res) => {
          resolve(res.statusCode ?? 0);
          res.resume();
        },
      );
      req.on('error', reject);
      req.write('{"resourceSpans":');
    });
    assert.equal(stalled, 408);
    assert.ok(Date.now() - started >= BODY_READ_TIMEOUT_MS - 1000);
  });

  test('path, method, size and encoding errors have their own statuses', async () => {
    const token = collector.issueToken({ runCaseId: 208, experimentId: 1, dataItemId: 1 });
    const auth = { ...JSON_CT, [INGEST_TOKEN_HEADER]: token };
    assert.equal((await post(port, '/v1/metrics', '{}', auth)).status, 404);
    assert.equal((await post(port, '/api/otel/v1/traces', '', auth, { method: 'GET' })).status, 405);
    const big = Buffer.alloc(MAX_BODY + 1, 'a');
    assert.equal((await post(port, '/api/otel/v1/traces', big, auth)).status, 413);
    assert.equal((await post(port, '/api/otel/v1/traces', big, auth, { chunked: true })).status, 413);
    const bomb = gzipSync(Buffer.alloc(MAX_BODY * 4, ' '));
    assert.equal(
      (await post(port, '/api/otel/v1/traces', bomb, { ...auth, 'content-encoding': 'gzip' })).status,
      413,
    );
    assert.equal(
      (await post(port, '/api/otel/v1/traces', '{}', { ...auth, 'content-encoding': 'br' })).status,
      415,
    );
    const bad = await post(port, '/api/otel/v1/traces', '{"resourceSpans":', auth);
    assert.equal(bad.status, 400);
    assert.match(String(bad.json.error), /JSON/);
    assert.equal((await stored('run_case_id = 208')).length, 0);
  });

  test('ingestForCase: the mock gateway forwards what it intercepted, answered like a direct post', async () => {
    const token = collector.issueToken({ runCaseId: 209, experimentId: 24, dataItemId: 2009 });
    const body = gzipSync(encode.tracesJson(claimingTrace(555)));
    const response = await collector.ingestForCase(token, {
      path: 'http://host.docker.internal:14318/api/otel/v1/traces?x=1',
      headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
      body,
    });
    assert.equal(response.status, 200);
    assert.deepEqual(JSON.parse(response.body), { ok: true, mock: 'otel-default', inserted: 3 });
    assert.equal(response.headers['x-mock-gateway'], 'otel-default');
    assert.equal((await stored('run_case_id = 209')).length, 3);
    const refused = await collector.ingestForCase('nope', {
      path: '/api/otel/v1/traces',
      headers: {},
      body: Buffer.from('{}'),
    });
    assert.equal(refused.status, 403);
  });

  test('1000 malformed or hostile bodies: every one answered 4xx, nothing stored, the server keeps serving', async () => {
    const token = collector.issueToken({ runCaseId: 210, experimentId: 1, dataItemId: 1 });
    const auth = { [INGEST_TOKEN_HEADER]: token };
    const protobufBody = encode.tracesProtobuf(claimingTrace(210, 20));
    const jsonBody = encode.tracesJson(claimingTrace(210, 20));
    const hostile: Array<{ body: Buffer; headers: Record<string, string>; chunked?: boolean }> = [];
    for (let i = 0; i < 1000; i++) {
      const kind = i % 10;
      const n = Math.floor(i / 10);
      switch (kind) {
        case 0: // truncated protobuf
          hostile.push({
            body: protobufBody.subarray(0, 1 + ((n * 37) % (protobufBody.length - 2))),
            headers: PROTOBUF_CT,
          });
          break;
        case 1: // deeply nested JSON
          hostile.push({
            body: Buffer.from(`${'['.repeat(1000 + n * 100)}${']'.repeat(1000 + n * 100)}`),
            headers: JSON_CT,
          });
          break;
        case 2: // a huge attribute value
          hostile.push({
            body: Buffer.from(
              JSON.stringify({ spans: [{ name: 'big', attributes: { blob: 'x'.repeat(MAX_BODY + n) } }] }),
            ),
            headers: JSON_CT,
            chunked: n % 2 === 0,
          });
          break;
        case 3: // JSON sent as protobuf
          hostile.push({ body: jsonBody, headers: PROTOBUF_CT });
          break;
        case 4: // protobuf sent as JSON / text
          hostile.push({ body: protobufBody, headers: n % 2 ? JSON_CT : { 'content-type': 'text/plain' } });
          break;
        case 5: // bad gzip
          hostile.push({
            body: Buffer.from(`not gzip ${n}`),
            headers: { ...JSON_CT, 'content-encoding': 'gzip' },
          });
          break;
        case 6: // a gzip bomb
          hostile.push({
            body: gzipSync(Buffer.alloc(MAX_BODY + 1 + n, '[')),
            headers: { ...JSON_CT, 'content-encoding': 'gzip' },
          });
          break;
        case 7: // JSON that is not an OTLP document
          hostile.push({
            body: Buffer.from(
              [
                '[1,2,3]',
                '"string"',
                '{"resourceSpans":{"not":"an array"}}',
                '{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":{"x":1}}]}]}]}',
                '{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":{"intValue":"1.5"}}]}]}]}]}',
                '{"spans":"nope"}',
                '{"spans":[{"attributes":[1,2]}]}',
                'NaN',
                '{"a":1}{"b":2}',
                '\u0000',
              ][n % 10] ?? '[]',
            ),
            headers: JSON_CT,
          });
          break;
        case 8: // attributes of the wrong shape inside otherwise valid OTLP
          hostile.push({
            body: Buffer.from(
              JSON.stringify({
                resourceSpans: [
                  {
                    scopeSpans: [
                      {
                        spans: [
                          { name: 's', attributes: [{ key: 'k', value: { kvlistValue: { values: 'x' } } }] },
                        ],
                      },
                    ],
                  },
                ],
              }),
            ),
            headers: JSON_CT,
          });
          break;
        default: // random bytes as protobuf
          hostile.push({
            body: Buffer.from(Array.from({ length: 64 + n }, (_, j) => (j * 131 + n * 17 + 0x80) & 0xff)),
            headers: PROTOBUF_CT,
          });
      }
    }
    const before = await totalRows();
    const statuses: number[] = [];
    const queue = hostile.map((h, index) => ({ ...h, index }));
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        for (let item = queue.shift(); item; item = queue.shift()) {
          const reply = await post(
            port,
            '/api/otel/v1/traces',
            item.body,
            { ...item.headers, ...auth },
            { chunked: item.chunked },
          );
          statuses[item.index] = reply.status;
        }
      }),
    );
    const wrong = statuses.map((s, i) => ({ i, s })).filter(({ s }) => s < 400 || s >= 500);
    assert.deepEqual(wrong, [], 'every hostile body gets a 4xx');
    assert.equal(await totalRows(), before, 'no partial rows');
    const ok = await post(port, '/api/otel/v1/traces', jsonBody, { ...JSON_CT, ...auth });
    assert.equal(ok.status, 200);
    assert.equal(ok.json.inserted, 20);
  });
});

describe('caseOtelEnv', () => {
  test('standard OTEL_* variables: base endpoint, protobuf, token header, service name, resource attributes', () => {
    const env = caseOtelEnv({
      endpoint: 'http://host.docker.internal:14318/',
      token: 'tok',
      serviceName: 'agent-x',
      runCaseId: 1,
      experimentId: 2,
      dataItemId: 3,
    });
    assert.equal(env.OTEL_EXPORTER_OTLP_ENDPOINT, 'http://host.docker.internal:14318');
    assert.equal(env.OTEL_EXPORTER_OTLP_PROTOCOL, 'http/protobuf');
    assert.equal(env.OTEL_EXPORTER_OTLP_HEADERS, `${INGEST_TOKEN_HEADER}=tok`);
    assert.equal(env.OTEL_SERVICE_NAME, 'agent-x');
    assert.equal(
      env.OTEL_RESOURCE_ATTRIBUTES,
      'benchmark.run_case_id=1,benchmark.experiment_id=2,benchmark.data_item_id=3',
    );
    assert.equal(env.OTEL_TRACES_EXPORTER, 'otlp');
    assert.equal(env.OTEL_LOGS_EXPORTER, 'otlp');
    assert.equal(env.OTEL_METRICS_EXPORTER, 'none');
  });
});
