import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { CaseGateway } from '../../src/mock-gateway/case-gateway';
import { captureLogger } from './docker-fixtures';
import {
  connect,
  manager,
  mockConfig,
  recordingOtelSink,
  request,
  startEchoUpstream,
  type EchoedRequest,
  type Upstream,
} from './mock-gateway-fixtures';

/**
 * The gateway from the host's side: CONTRACT §11 test_mock_gateway (local endpoint), §5.3 order,
 * forwarding, CONNECT and the record. Container-side behaviour is in mock-gateway-containers.
 */
describe('mock gateway (host side)', () => {
  const { log, lines } = captureLogger();
  const gateways: CaseGateway[] = [];
  let upstream: Upstream;

  async function start(raw: unknown | null, extra: Parameters<typeof manager>[1] = {}): Promise<CaseGateway> {
    const gateway = await manager(log, extra).start({
      runCaseId: 900 + gateways.length,
      config: raw === null ? null : mockConfig(raw),
    });
    // The "container" is this test process.
    gateway.admit(['127.0.0.1']);
    gateways.push(gateway);
    return gateway;
  }

  before(async () => {
    upstream = await startEchoUpstream();
  });

  after(async () => {
    await Promise.all(gateways.map((g) => g.close()));
    await upstream.close();
  });

  describe('CONTRACT §11 test_mock_gateway', () => {
    test('passthrough false + json rule GET /v1/ping → {pong: true}', async () => {
      const g = await start({
        passthrough: false,
        rules: [
          {
            name: 'ping',
            match: { methods: ['GET'], path: '/v1/ping' },
            response: { type: 'json', json: { pong: true } },
          },
        ],
      });
      const res = await request(g.port, '/v1/ping');
      assert.equal(res.status, 200);
      assert.equal(res.headers['content-type'], 'application/json');
      assert.deepEqual(JSON.parse(res.body), { pong: true });
    });

    test('python rule GET /v1/echo reads query.name[0] (default world)', async () => {
      const g = await start({
        rules: [
          {
            name: 'echo',
            match: { methods: ['GET'], path: '/v1/echo' },
            response: {
              type: 'python',
              python_code:
                'def handle(request):\n    name = request["query"].get("name", ["world"])[0]\n    return {"json": {"hello": name}}',
            },
          },
        ],
      });
      assert.deepEqual(JSON.parse((await request(g.port, '/v1/echo?name=codex')).body), { hello: 'codex' });
      assert.deepEqual(JSON.parse((await request(g.port, '/v1/echo')).body), { hello: 'world' });
    });

    test('passthrough false and no rules: POST traces and logs answer mock == "otel-default"', async () => {
      const g = await start({ passthrough: false, rules: [] });
      for (const [path, body] of [
        ['/api/otel/v1/traces', '{"resourceSpans":[]}'],
        ['/api/otel/v1/logs', '{"resourceLogs":[]}'],
      ] as const) {
        const res = await request(g.port, path, {
          method: 'POST',
          body,
          headers: { 'content-type': 'application/json' },
        });
        assert.equal(res.status, 200);
        assert.equal(JSON.parse(res.body).mock, 'otel-default');
        assert.equal(res.headers['x-mock-gateway'], 'otel-default');
      }
    });

    test('a custom ingest returning 7 is called once with content type, encoding, path and the exact body bytes', async () => {
      const sink = recordingOtelSink(7);
      const g = await start({ passthrough: false, rules: [] }, { otelForward: sink.forward });
      const body = '{"resourceSpans":[{"scopeSpans":[]}], "ü": 1}';
      const res = await request(g.port, '/api/otel/v1/traces', {
        method: 'POST',
        body,
        headers: { 'content-type': 'application/json' },
      });
      assert.equal(JSON.parse(res.body).inserted, 7);
      assert.equal(sink.calls.length, 1);
      const [call] = sink.calls;
      assert.ok(call);
      assert.match(String(call.headers['content-type']), /application\/json/);
      assert.equal(call.headers['content-encoding'] ?? '', '');
      assert.equal(call.path, '/api/otel/v1/traces');
      assert.deepEqual(call.body, Buffer.from(body));
      assert.equal(call.sourceIp, '127.0.0.1');
    });

    test('no mock config at all: the gateway starts and answers the default OTel POST', async () => {
      const g = await start(null);
      const res = await request(g.port, '/api/otel/v1/traces', { method: 'POST', body: '{}' });
      assert.equal(JSON.parse(res.body).mock, 'otel-default');
    });
  });

  describe('CONTRACT §11 test_mock_proxy_env', () => {
    test('NO_PROXY and no_proxy are 127.0.0.1,localhost,host.docker.internal; every proxy variable names the gateway', async () => {
      const g = await manager(log, { bindHost: '127.0.0.1', advertisedHost: 'host.docker.internal' }).start({
        runCaseId: 1,
        config: null,
      });
      gateways.push(g);
      const env = g.proxyEnv();
      const proxy = `http://host.docker.internal:${g.port}`;
      assert.equal(g.baseUrl, proxy);
      assert.deepEqual(env, {
        HTTP_PROXY: proxy,
        HTTPS_PROXY: proxy,
        ALL_PROXY: proxy,
        http_proxy: proxy,
        https_proxy: proxy,
        all_proxy: proxy,
        NO_PROXY: '127.0.0.1,localhost,host.docker.internal',
        no_proxy: '127.0.0.1,localhost,host.docker.internal',
      });
      assert.deepEqual(g.containerFiles(), [], 'no rules: nothing is ever decrypted, no CA is imposed');
    });

    test('with rules the CA env and files are added', async () => {
      const g = await start({ rules: [{ match: { host: 'api.x.com' } }] });
      const env = g.proxyEnv();
      const files = g.containerFiles();
      const bundle = files.find((f) => f.path === env.SSL_CERT_FILE);
      assert.equal(env.REQUESTS_CA_BUNDLE, env.SSL_CERT_FILE);
      assert.equal(env.CURL_CA_BUNDLE, env.SSL_CERT_FILE);
      assert.equal(files.find((f) => f.path === env.NODE_EXTRA_CA_CERTS)?.content, g.caCertPem);
      assert.ok(bundle?.content.endsWith(g.caCertPem), 'bundle ends with our CA');
      assert.ok(
        (bundle?.content.match(/BEGIN CERTIFICATE/g) ?? []).length > 100,
        'bundle carries the public roots',
      );
    });
  });

  describe('§5.3 handling order and forwarding', () => {
    test('OTel paths win over rules, also as absolute-URI proxy requests to any host', async () => {
      const sink = recordingOtelSink(3);
      const g = await start(
        { passthrough: false, rules: [{ name: 'all', response: { json: { rule: true } } }] },
        { otelForward: sink.forward },
      );
      const res = await request(g.port, 'http://collector.example:4318/api/otel/v1/logs', {
        method: 'POST',
        body: 'x',
      });
      assert.equal(JSON.parse(res.body).inserted, 3);
      assert.equal(sink.calls[0]?.path, '/api/otel/v1/logs');
      assert.deepEqual(
        JSON.parse((await request(g.port, '/api/otel/v1/traces')).body),
        { rule: true },
        'GET is not intercepted',
      );
    });

    test('a failing ingest still answers 200 otel-default with inserted 0 and logs the code', async () => {
      const g = await start(null, {
        otelForward: () => Promise.reject(new Error('database down')),
      });
      const res = await request(g.port, '/api/otel/v1/traces', { method: 'POST', body: '{}' });
      assert.equal(res.status, 200);
      assert.deepEqual(JSON.parse(res.body), { ok: true, mock: 'otel-default', inserted: 0 });
      assert.ok(
        lines.some(
          (l) => l.code === 'MOCK_GATEWAY_OTEL_INGEST_FAILED' && String(l.err).includes('database down'),
        ),
      );
    });

    test('passthrough false, no match → 404 no_mock_rule', async () => {
      const g = await start({ passthrough: false, rules: [{ match: { path: '/only' } }] });
      const res = await request(g.port, 'http://elsewhere.test/other');
      assert.equal(res.status, 404);
      assert.deepEqual(JSON.parse(res.body), { ok: false, error: 'no_mock_rule' });
    });

    test('passthrough: forwarded with method, body and end-to-end headers; upstream status, headers and body relayed', async () => {
      const g = await start({ rules: [{ match: { path: '/mocked' }, response: { json: 1 } }] });
      upstream.requests.length = 0;
      const res = await request(g.port, `http://127.0.0.1:${upstream.port}/up?status=418`, {
        method: 'PATCH',
        body: 'payload',
        headers: {
          'X-Custom': 'kept',
          'Proxy-Connection': 'keep-alive',
          Connection: 'close, X-Hop',
          'X-Hop': 'dropped',
        },
      });
      assert.equal(res.status, 418);
      assert.equal(res.headers['x-upstream'], 'echo');
      assert.deepEqual(res.headers['set-cookie'], ['a=1', 'b=2']);
      const seen = JSON.parse(res.body) as EchoedRequest;
      assert.equal(seen.method, 'PATCH');
      assert.equal(seen.url, '/up?status=418');
      assert.equal(seen.body, 'payload');
      assert.equal(seen.headers['x-custom'], 'kept');
      assert.equal(seen.headers['proxy-connection'], undefined);
      assert.equal(seen.headers['x-hop'], undefined, 'headers named by Connection are hop-by-hop');
      assert.notEqual(seen.headers.connection, 'close, X-Hop');
    });

    test('chunked request bodies reach rules and upstreams whole', async () => {
      const g = await start({
        rules: [
          {
            name: 'py',
            match: { path: '/py' },
            response: { type: 'python', python_code: 'def handle(r):\n    return {"text": r["body_text"]}' },
          },
        ],
      });
      const body = 'chunk-one|chunk-two|' + 'x'.repeat(100_000);
      const mocked = await request(g.port, 'http://any.test/py', { method: 'POST', body, chunked: true });
      assert.equal(mocked.body, body);
      upstream.requests.length = 0;
      const forwarded = await request(g.port, `http://127.0.0.1:${upstream.port}/chunked`, {
        method: 'POST',
        body,
        chunked: true,
      });
      assert.equal((JSON.parse(forwarded.body) as EchoedRequest).body, body);
      assert.equal(upstream.requests[0]?.headers['content-length'], String(Buffer.byteLength(body)));
      assert.equal(upstream.requests[0]?.headers['transfer-encoding'], undefined);
    });

    test('an unreachable upstream is a 502 with the reason, not a dropped connection', async () => {
      const g = await start(null);
      const closedPort = await new Promise<number>((resolve) => {
        const s = net.createServer().listen(0, '127.0.0.1', () => {
          const { port } = s.address() as net.AddressInfo;
          s.close(() => resolve(port));
        });
      });
      const res = await request(g.port, `http://127.0.0.1:${closedPort}/`);
      assert.equal(res.status, 502);
      assert.equal(JSON.parse(res.body).ok, false);
      assert.match(JSON.parse(res.body).error, /ECONNREFUSED/);
    });

    test('a python handler error is a 500 with the CONTRACT code, logged with it', async () => {
      const g = await start({
        rules: [{ name: 'broken', response: { type: 'python', python_code: 'x = 1' } }],
      });
      const res = await request(g.port, '/anything');
      assert.equal(res.status, 500);
      assert.deepEqual(JSON.parse(res.body), {
        ok: false,
        error: 'E_MOCK_PYTHON_MISSING_HANDLE: define handle(request)',
        rule: 'broken',
      });
      assert.ok(lines.some((l) => l.code === 'E_MOCK_PYTHON_MISSING_HANDLE' && l.rule === 'broken'));
    });

    test('a rule status Node cannot send becomes a 500 instead of a hung client', async () => {
      const g = await start({ rules: [{ response: { status: 1000, json: {} } }] });
      const res = await request(g.port, '/x');
      assert.equal(res.status, 500);
      assert.match(JSON.parse(res.body).error, /invalid mock response/);
    });
  });

  describe('CONNECT', () => {
    test('passthrough false and no rule for the origin → 502 CONNECT disabled by mock config', async () => {
      const g = await start({ passthrough: false, rules: [{ match: { host: 'other.test' } }] });
      const res = await connect(g.port, 'api.x.com:443');
      assert.equal(res.status, 502);
      assert.equal(res.body, 'CONNECT disabled by mock config');
      res.socket.destroy();
    });

    test('passthrough: a plain TCP tunnel to the target', async () => {
      const g = await start(null);
      const res = await connect(g.port, `127.0.0.1:${upstream.port}`);
      assert.equal(res.status, 200);
      const answer = await new Promise<string>((resolve) => {
        let text = '';
        res.socket.on('data', (c: Buffer) => {
          text += c.toString('utf8');
          if (text.includes('"url":"/through-tunnel"')) resolve(text);
        });
        res.socket.write(`GET /through-tunnel HTTP/1.1\r\nHost: tunnel.test\r\nConnection: close\r\n\r\n`);
      });
      assert.match(answer, /^HTTP\/1\.1 200 OK/);
      res.socket.destroy();
    });

    test('a tunnel target that refuses is a 502', async () => {
      const g = await start(null);
      const res = await connect(g.port, '127.0.0.1:1');
      assert.equal(res.status, 502);
      res.socket.destroy();
    });
  });

  test('every request is recorded, and logged as MOCK_GATEWAY_HTTP', async () => {
    // Tied to http URLs, so the CONNECT is refused rather than decrypted.
    const g = await start({
      passthrough: false,
      rules: [{ name: 'hit', match: { url_regex: '^http://[^/]+/hit$' } }],
    });
    await request(g.port, '/hit');
    await request(g.port, 'http://a.test/miss');
    await request(g.port, '/api/otel/v1/traces', { method: 'POST', body: '{}' });
    (await connect(g.port, 'blocked.test:443')).socket.destroy();
    const recorded = g
      .requests()
      .map(({ method, url, matched, status }) => ({ method, url, matched, status }));
    assert.deepEqual(recorded, [
      { method: 'GET', url: `http://127.0.0.1:${g.port}/hit`, matched: 'hit', status: 200 },
      { method: 'GET', url: 'http://a.test/miss', matched: 'no_match', status: 404 },
      { method: 'POST', url: `http://127.0.0.1:${g.port}/api/otel/v1/traces`, matched: 'otel', status: 200 },
      { method: 'CONNECT', url: 'blocked.test:443', matched: 'connect', status: 502 },
    ]);
    for (const r of g.requests()) {
      assert.ok(r.latencyMs >= 0);
      assert.ok(!Number.isNaN(Date.parse(r.at)));
    }
    assert.ok(
      lines.some((l) => l.code === 'MOCK_GATEWAY_HTTP' && l.url === 'http://a.test/miss' && l.status === 404),
    );
    assert.ok(
      lines.some(
        (l) => l.code === 'MOCK_GATEWAY_STARTED' && l.run_case_id !== undefined && l.passthrough === false,
      ),
    );
    assert.ok(lines.some((l) => l.code === 'MOCK_GATEWAY_OTEL_DEFAULT_HIT'));
  });

  test('a POST that looks like telemetry on another path is logged as an OTel candidate', async () => {
    const g = await start(null, {});
    await request(g.port, `http://127.0.0.1:${upstream.port}/v1/traces`, { method: 'POST', body: '{}' });
    assert.ok(
      lines.some((l) => l.code === 'MOCK_GATEWAY_OTEL_CANDIDATE' && String(l.url).endsWith('/v1/traces')),
    );
  });

  test('close() ends open connections and tunnels and frees the port', async () => {
    const g = await manager(log).start({ runCaseId: 5, config: null });
    g.admit(['127.0.0.1']);
    const tunnel = await connect(g.port, `127.0.0.1:${upstream.port}`);
    const closed = new Promise<void>((resolve) => tunnel.socket.once('close', () => resolve()));
    await g.close();
    await closed;
    await assert.rejects(request(g.port, '/'), /ECONNREFUSED/);
    await g.close();
  });
});
