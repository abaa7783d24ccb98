import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createDockerClient, pingDocker } from '../../src/docker/docker-client';
import { DockerSandbox } from '../../src/docker/docker-sandbox';
import { Semaphore } from '../../src/docker/semaphore';
import { CertificateAuthority } from '../../src/mock-gateway/certificate-authority';
import { dockerHostAddress } from '../../src/mock-gateway/host-address';
import type { CaseGateway, MockGatewayManager } from '../../src/mock-gateway/case-gateway';
import {
  AGENT_BASE,
  baseSpec,
  captureLogger,
  ensureBenchImages,
  newTestRunId,
  removeTestContainers,
  SOCKET_PATH,
} from './docker-fixtures';
import {
  manager,
  mockConfig,
  recordingOtelSink,
  startEchoUpstream,
  startTlsEchoUpstream,
  type EchoedRequest,
  type Upstream,
} from './mock-gateway-fixtures';

/**
 * Real agent containers (bench/agent-base: curl, python3) talking to per-case gateways with ONLY
 * the env and files the gateway hands out: curl and Python urllib, http and https (decrypted).
 */

const docker = createDockerClient(SOCKET_PATH);
const runId = newTestRunId();
const { log, lines } = captureLogger();
const sandbox = new DockerSandbox(docker, new Semaphore(4), log);
const PYTHON_TIMEOUT_MS = 2000;
const UPSTREAM_CA_PATH = '/benchmark/upstream-ca.pem';

interface Case {
  method: string;
  url: string;
  body?: string;
}

interface Answer {
  status: number;
  body: string;
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** One JSON line per case: what curl got (status and body). */
function curlScript(cases: readonly Case[], extraArgs = ''): string {
  const lines = cases.map((c) => {
    const data = c.body === undefined ? '' : ` --data-binary ${shellQuote(c.body)}`;
    return (
      `status=$(curl -s -m 20 ${extraArgs} -X ${c.method}${data} -o /tmp/body -w '%{http_code}' ${shellQuote(c.url)}); ` +
      `python3 -c 'import json,sys; print(json.dumps({"status": int(sys.argv[1]), "body": open("/tmp/body", errors="replace").read()}))' "$status"`
    );
  });
  return lines.join('\n');
}

const URLLIB_SCRIPT = `
import json, sys, urllib.error, urllib.request
for c in json.load(sys.stdin):
    data = c["body"].encode() if "body" in c else None
    req = urllib.request.Request(c["url"], method=c["method"], data=data)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            status, body = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read().decode()
    print(json.dumps({"status": status, "body": body}))
`;

function parseAnswers(stdout: string): Answer[] {
  return stdout
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Answer);
}

interface Agent {
  exec(command: string): Promise<{ exitCode: number; stdout: string; stderr: string }>;
  curl(cases: readonly Case[], extraArgs?: string): Promise<Answer[]>;
  urllib(cases: readonly Case[]): Promise<Answer[]>;
}

/** A hardened case container that knows the gateway only through its env and files. */
async function agentFor(
  gateway: CaseGateway,
  extraFiles: Array<{ path: string; content: string }> = [],
): Promise<Agent> {
  const { containerId, addresses } = await sandbox.createAndStart(
    baseSpec(runId, {
      image: AGENT_BASE,
      env: gateway.proxyEnv(),
      files: [...gateway.containerFiles(), ...extraFiles],
      limits: { memoryMb: 256, cpus: 1, pidsLimit: 128 },
    }),
  );
  gateway.admit(addresses);
  const exec = async (command: string) => {
    const r = await sandbox.exec(containerId, { command, timeoutMs: 120_000 });
    return { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr };
  };
  return {
    exec,
    async curl(cases, extraArgs = '') {
      const r = await exec(curlScript(cases, extraArgs));
      assert.equal(r.exitCode, 0, r.stderr);
      return parseAnswers(r.stdout);
    },
    async urllib(cases) {
      const r = await exec(
        `python3 -c ${shellQuote(URLLIB_SCRIPT)} <<'CASES'\n${JSON.stringify(cases)}\nCASES`,
      );
      assert.equal(r.exitCode, 0, r.stderr);
      return parseAnswers(r.stdout);
    },
  };
}

describe('mock gateway with real containers', () => {
  const gateways: CaseGateway[] = [];
  let gatewayManager: MockGatewayManager;
  let bridgeIp: string;
  let upstream: Upstream;
  let tlsUpstream: Upstream;
  let tunnelledTlsUpstream: Upstream;
  const upstreamCa = CertificateAuthority.generate();
  const otel = recordingOtelSink(0);

  async function start(raw: unknown | null, runCaseId = 7000 + gateways.length): Promise<CaseGateway> {
    const g = await gatewayManager.start({
      runCaseId,
      config: raw === null ? null : mockConfig(raw),
    });
    gateways.push(g);
    return g;
  }

  before(async () => {
    assert.ok(await pingDocker(docker, 5000), 'docker daemon must be reachable');
    await ensureBenchImages(docker);
    bridgeIp = await dockerHostAddress(docker);
    upstream = await startEchoUpstream();
    tlsUpstream = await startTlsEchoUpstream(upstreamCa, bridgeIp);
    tunnelledTlsUpstream = await startTlsEchoUpstream(upstreamCa, bridgeIp);
    gatewayManager = manager(log, {
      bindHost: bridgeIp,
      advertisedHost: 'host.docker.internal',
      otelForward: otel.forward,
      python: { image: AGENT_BASE, timeoutMs: PYTHON_TIMEOUT_MS },
      upstreamCaCerts: [upstreamCa.certPem],
    });
  });

  after(async () => {
    await removeTestContainers(docker, runId);
    await Promise.all(gateways.map((g) => g.close()));
    await Promise.all([upstream, tlsUpstream, tunnelledTlsUpstream].map((u) => u?.close()));
  });

  test('every criterion and rule type, for http and https (decrypted), from curl and from Python urllib', async () => {
    const g = await start({
      passthrough: false,
      rules: [
        { name: 'method', match: { methods: ['DELETE'] }, response: { type: 'text', text: 'by-method' } },
        {
          name: 'url',
          match: { url: 'http://exact.test/exact?q=1' },
          response: { type: 'text', text: 'by-url-http' },
        },
        {
          name: 'url-https',
          match: { url: 'https://exact.test/exact?q=1' },
          response: { type: 'text', text: 'by-url-https' },
        },
        {
          name: 'url_regex',
          match: { url_regex: 'https?://regex\\.test/items/\\d+' },
          response: { type: 'text', text: 'by-url_regex' },
        },
        { name: 'host', match: { host: 'host.test:8443' }, response: { type: 'text', text: 'by-host' } },
        {
          name: 'path',
          match: { path: '/exact-path' },
          response: { type: 'json', status: 201, json: { by: 'path', city: 'Zürich' } },
        },
        {
          name: 'path_regex',
          match: { path_regex: '^/re/[a-z]+$' },
          response: { type: 'text', text: 'by-path_regex' },
        },
        {
          name: 'python',
          match: { methods: ['POST'], path: '/py' },
          response: {
            type: 'python',
            python_code:
              'def handle(request):\n    return {"status": 202, "json": {"scheme": request["scheme"], "host": request["host"], ' +
              '"path": request["path"], "q": request["query"], "body": request["body_text"]}}',
          },
        },
      ],
    });
    const cases: Array<Case & { expect: Answer }> = [];
    for (const scheme of ['http', 'https']) {
      cases.push(
        { method: 'DELETE', url: `${scheme}://m.test/x`, expect: { status: 200, body: 'by-method' } },
        {
          method: 'GET',
          url: `${scheme}://exact.test/exact?q=1`,
          expect: { status: 200, body: `by-url-${scheme}` },
        },
        {
          method: 'GET',
          url: `${scheme}://exact.test/exact?q=2`,
          expect: { status: 404, body: '{"ok":false,"error":"no_mock_rule"}' },
        },
        {
          method: 'GET',
          url: `${scheme}://regex.test/items/42?x=1`,
          expect: { status: 200, body: 'by-url_regex' },
        },
        { method: 'GET', url: `${scheme}://host.test:8443/any`, expect: { status: 200, body: 'by-host' } },
        {
          method: 'GET',
          url: `${scheme}://p.test/exact-path?ignored=1`,
          expect: { status: 201, body: '{"by":"path","city":"Zürich"}' },
        },
        { method: 'GET', url: `${scheme}://p.test/re/abc`, expect: { status: 200, body: 'by-path_regex' } },
        {
          method: 'POST',
          url: `${scheme}://py.test/py?a=1&a=&b=2`,
          body: 'hello',
          expect: {
            status: 202,
            body: JSON.stringify({
              scheme,
              host: 'py.test',
              path: '/py',
              q: { a: ['1', ''], b: ['2'] },
              body: 'hello',
            }).replace(/[:,]/g, '$& '),
          },
        },
      );
    }
    const agent = await agentFor(g);
    const expected = cases.map((c) => c.expect);
    assert.deepEqual(await agent.curl(cases), expected, 'curl');
    assert.deepEqual(await agent.urllib(cases), expected, 'urllib');

    const connects = g.requests().filter((r) => r.method === 'CONNECT');
    assert.ok(
      connects.length >= 8 && connects.every((r) => r.status === 200),
      'https went through decrypted CONNECTs',
    );
    assert.ok(g.requests().some((r) => r.url === 'https://py.test/py?a=1&a=&b=2' && r.matched === 'python'));
  });

  test('passthrough: plain http forwarded, a named https origin decrypted (rule or forward), other https tunnelled untouched', async () => {
    const tlsOrigin = `${bridgeIp}:${tlsUpstream.port}`;
    const g = await start({
      rules: [
        { name: 'mocked', match: { host: tlsOrigin, path: '/mocked' }, response: { json: { mocked: true } } },
      ],
    });
    const agent = await agentFor(g, [{ path: UPSTREAM_CA_PATH, content: upstreamCa.certPem }]);
    const big = 'chunked-body-'.repeat(5000);

    const answers = await agent.curl([
      { method: 'GET', url: `http://${bridgeIp}:${upstream.port}/plain?x=1` },
      { method: 'GET', url: `https://${tlsOrigin}/mocked` },
      { method: 'PUT', url: `https://${tlsOrigin}/forwarded`, body: 'via-mitm' },
    ]);
    assert.equal(answers[0]?.status, 200);
    assert.equal((JSON.parse(answers[0]?.body ?? '{}') as EchoedRequest).url, '/plain?x=1');
    assert.deepEqual(answers[1], { status: 200, body: '{"mocked":true}' });
    const forwarded = JSON.parse(answers[2]?.body ?? '{}') as EchoedRequest;
    assert.deepEqual([forwarded.method, forwarded.url, forwarded.body], ['PUT', '/forwarded', 'via-mitm']);

    // Not named by any rule: a plain tunnel, so the client sees the upstream's own certificate.
    const tunnelled = await agent.curl(
      [{ method: 'GET', url: `https://${bridgeIp}:${tunnelledTlsUpstream.port}/tunnel` }],
      `--cacert ${UPSTREAM_CA_PATH}`,
    );
    assert.equal((JSON.parse(tunnelled[0]?.body ?? '{}') as EchoedRequest).url, '/tunnel');

    const chunked = await agent.curl(
      [{ method: 'POST', url: `http://${bridgeIp}:${upstream.port}/chunked`, body: big }],
      `-H 'Transfer-Encoding: chunked'`,
    );
    assert.equal((JSON.parse(chunked[0]?.body ?? '{}') as EchoedRequest).body, big);

    const viaPython = await agent.urllib([{ method: 'GET', url: `https://${tlsOrigin}/mocked` }]);
    assert.deepEqual(viaPython, [{ status: 200, body: '{"mocked":true}' }]);

    assert.deepEqual(
      g
        .requests()
        .map((r) => `${r.method} ${r.matched} ${r.status}`)
        .filter((r) => !r.startsWith('CONNECT')),
      [
        'GET passthrough 200',
        'GET mocked 200',
        'PUT passthrough 200',
        'POST passthrough 200',
        'GET mocked 200',
      ],
    );
  });

  test('two gateways with different configs serve their own cases side by side', async () => {
    const [a, b] = await Promise.all(
      ['A', 'B'].map((who) =>
        start({
          passthrough: false,
          rules: [{ match: { path: '/who' }, response: { type: 'text', text: who } }],
        }),
      ),
    );
    assert.ok(a && b);
    assert.notEqual(a.port, b.port);
    const [agentA, agentB] = await Promise.all([agentFor(a), agentFor(b)]);
    const both = async (agent: Agent, gateway: CaseGateway) =>
      Promise.all([
        agent.curl([
          { method: 'GET', url: 'http://who.test/who' },
          { method: 'GET', url: `${gateway.baseUrl}/who` },
        ]),
        agent.urllib([{ method: 'GET', url: 'https://who.test/who' }]),
      ]);
    const [fromA, fromB] = await Promise.all([both(agentA, a), both(agentB, b)]);
    assert.deepEqual(
      fromA.flat().map((x) => x.body),
      ['A', 'A', 'A'],
    );
    assert.deepEqual(
      fromB.flat().map((x) => x.body),
      ['B', 'B', 'B'],
    );
  });

  test('a python handler that loops forever answers 500 within the timeout and the gateway serves the next request', async () => {
    const g = await start({
      passthrough: false,
      rules: [
        {
          name: 'loop',
          match: { path: '/loop' },
          response: { type: 'python', python_code: 'def handle(r):\n    while True:\n        pass' },
        },
        {
          name: 'ok',
          match: { path: '/ok' },
          response: { type: 'python', python_code: 'def handle(r):\n    return {"text": "served"}' },
        },
      ],
    });
    const agent = await agentFor(g);
    const r = await agent.exec(
      `curl -s -m 30 -o /tmp/loop -w '%{http_code} %{time_total}' http://loop.test/loop; echo; cat /tmp/loop; echo; curl -s -m 30 http://loop.test/ok`,
    );
    const [statusAndTime = '', loopBody = '', next = ''] = r.stdout.split('\n');
    const [status, seconds] = statusAndTime.split(' ');
    assert.equal(status, '500');
    assert.ok(Number(seconds) < PYTHON_TIMEOUT_MS / 1000 + 3, `answered after ${seconds}s`);
    assert.match(loopBody, /E_MOCK_PYTHON_TIMEOUT/);
    assert.equal(next, 'served');
    assert.ok(lines.some((l) => l.code === 'E_MOCK_PYTHON_TIMEOUT' && l.rule === 'loop'));
  });

  test('CONTRACT §11 from a container: OTel default answers via {{mock.base_url}} and via the proxy; proxy env as pinned', async () => {
    const g = await start({ passthrough: false, rules: [] });
    const agent = await agentFor(g);
    const r = await agent.exec(
      `curl -s -X POST -H 'content-type: application/json' -d '{"resourceSpans":[]}' ${g.baseUrl}/api/otel/v1/traces; echo; ` +
        `curl -s -X POST -d '{"resourceLogs":[]}' http://collector.test:4318/api/otel/v1/logs; echo; ` +
        `env | grep -i '_proxy=' | sort`,
    );
    const [traces = '', logs = '', ...env] = r.stdout.trim().split('\n');
    assert.equal(JSON.parse(traces).mock, 'otel-default');
    assert.equal(JSON.parse(logs).mock, 'otel-default', 'any host, through the proxy');
    const proxy = `http://host.docker.internal:${g.port}`;
    assert.deepEqual(env, [
      `ALL_PROXY=${proxy}`,
      `HTTPS_PROXY=${proxy}`,
      `HTTP_PROXY=${proxy}`,
      'NO_PROXY=127.0.0.1,localhost,host.docker.internal',
      `all_proxy=${proxy}`,
      `http_proxy=${proxy}`,
      `https_proxy=${proxy}`,
      'no_proxy=127.0.0.1,localhost,host.docker.internal',
    ]);
    const sources = otel.calls.map((c) => c.sourceIp);
    assert.ok(
      sources.length >= 2 && sources.every((ip) => ip.startsWith('172.')),
      `source IPs: ${sources.join(',')}`,
    );
  });
});
