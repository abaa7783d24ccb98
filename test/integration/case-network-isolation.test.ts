import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import os from 'node:os';
import { promisify } from 'node:util';
import { openCaseNetwork, type CaseNetwork, type CaseNetworkDeps } from '../../activities/case-network';
import { createDockerClient, pingDocker } from '../../src/docker/docker-client';
import { DockerSandbox } from '../../src/docker/docker-sandbox';
import { statusCode } from '../../src/docker/errors';
import { createIsolatedNetwork } from '../../src/docker/isolated-network';
import { Semaphore } from '../../src/docker/semaphore';
import { parseExperimentMessage, type ExperimentRunRequested } from '../../src/domain/message';
import { resolveCaseSpec } from '../../src/domain/runtime-spec';
import type { MockGatewayManager, RecordedRequest } from '../../src/mock-gateway/case-gateway';
import { dockerHostAddress } from '../../src/mock-gateway/host-address';
import { platformMessageExample } from '../support/platform';
import {
  BUSYBOX,
  baseSpec,
  captureLogger,
  ensureBenchImages,
  newTestRunId,
  removeTestContainers,
  SOCKET_PATH,
} from './docker-fixtures';
import { manager, recordingOtelSink } from './mock-gateway-fixtures';

/**
 * Issue 15 items 4, 8, 9, attacked from INSIDE real case containers (busybox, production
 * hardening): a case reaches neither another case's container nor its gateway, nor the host's
 * listeners (metrics-like port, RabbitMQ, the metadata address), only its own collector, gateway
 * and the ports its spec opens; a gateway answers 403 to anyone but its case and records nothing.
 * The cases are opened by openCaseNetwork itself, with real networks and host firewall rules.
 * Runs as root.
 */

const run = promisify(execFile);
const docker = createDockerClient(SOCKET_PATH);
const runId = newTestRunId();
const { log } = captureLogger();
const sandbox = new DockerSandbox(docker, new Semaphore(4), log);
const deploymentId = `test-${runId}`;
const RABBITMQ_PORT = 5672;
const METADATA = '169.254.169.254';
/** What every case asks its gateway (as a proxy): its rule answers with the case's name. */
const WHO_URL = 'http://api.test/v1/who';

/** A host listener on every interface, as the worker's metrics port and collector are. */
async function hostListener(body: string): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((_req, res) => res.end(body));
  await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** IPv4 addresses of this host outside Docker's bridges. */
function hostLanAddresses(): string[] {
  return Object.entries(os.networkInterfaces())
    .filter(([name]) => !/^(lo|docker\d*|br-|abm|veth)/.test(name))
    .flatMap(([, addresses]) =>
      (addresses ?? []).filter((a) => a.family === 'IPv4' && !a.internal).map((a) => a.address),
    );
}

/**
 * One line per target: `host:port open` (a TCP connection was made), `refused` (reset at once) or
 * `blocked …` (nothing answered). busybox nc; `timeout` bounds a target that accepts and stays silent.
 */
function probeScript(targets: Array<[string, number]>): string {
  const lines = targets.map(([host, port]) => `probe ${host} ${port}`);
  return [
    'probe() {',
    '  out=$(echo | timeout 6 nc -w 3 "$1" "$2" 2>&1); rc=$?',
    '  case "$out" in *refused*) echo "$1:$2 refused";; *)',
    '    if [ "$rc" -eq 0 ]; then echo "$1:$2 open"; else echo "$1:$2 blocked rc=$rc $out"; fi;; esac',
    '}',
    ...lines,
  ].join('\n');
}

function probeResults(stdout: string): Map<string, string> {
  return new Map(
    stdout
      .trim()
      .split('\n')
      .map((line) => {
        const [target = '', ...rest] = line.split(' ');
        return [target, rest.join(' ')] as [string, string];
      }),
  );
}

/**
 * One HTTP/1.0 request with busybox nc (the image's static wget crashes), printing the raw
 * response and `status=<nc exit>`. `target` is an absolute URL for a proxy request, else a path.
 */
function httpScript(url: string, target: string, method = 'GET', body = ''): string {
  const { hostname, port } = new URL(url);
  const head = `${method} ${target} HTTP/1.0\\r\\nHost: api.test\\r\\nContent-Length: ${body.length}\\r\\n\\r\\n`;
  return `printf '${head}${body}' | timeout 8 nc -w 5 ${hostname} ${port || 80} 2>&1; echo " status=$?"`;
}

async function iptablesRules(): Promise<string> {
  return (await run('iptables', ['-w', '-S'])).stdout;
}

async function networkExists(name: string): Promise<boolean> {
  try {
    await docker.getNetwork(name).inspect();
    return true;
  } catch (err) {
    if (statusCode(err) === 404) return false;
    throw err;
  }
}

interface OpenedCase {
  network: CaseNetwork;
  /** The case's own network, if it got one. */
  networkName: string | undefined;
  gatewayUrl: string;
  addresses: string[];
  exec(command: string): Promise<string>;
  close(): Promise<RecordedRequest[]>;
}

describe('case isolation on the network (real containers, host firewall)', () => {
  let bridgeIp: string;
  let gateways: MockGatewayManager;
  let collector: Awaited<ReturnType<typeof hostListener>>;
  let metrics: Awaited<ReturnType<typeof hostListener>>;
  let openedPort: Awaited<ReturnType<typeof hostListener>>;
  const opened: OpenedCase[] = [];
  const bridges: string[] = [];
  let nextCaseId = 9100;

  let deps: CaseNetworkDeps;

  before(async () => {
    assert.ok(await pingDocker(docker, 5000), 'docker daemon must be reachable');
    await ensureBenchImages(docker);
    bridgeIp = await dockerHostAddress(docker);
    collector = await hostListener('collector');
    metrics = await hostListener('metrics');
    openedPort = await hostListener('opened-by-spec');
    gateways = manager(log, {
      bindHost: bridgeIp,
      advertisedHost: 'host.docker.internal',
      otelForward: recordingOtelSink().forward,
    });
    deps = {
      collector: {
        issueToken: () => randomBytes(8).toString('hex'),
        revokeToken: () => {},
        adoptToken: () => {},
        bindSource: () => {},
        drain: async () => true,
      },
      collectorUrl: `http://host.docker.internal:${collector.port}`,
      gateways,
      networks: {
        isolate: true,
        collectorPort: collector.port,
        hostPorts: [],
        create: async ({ runCaseId, sealed, ports }) => {
          const network = await createIsolatedNetwork(docker, {
            name: `agentbench-case-${runCaseId}-${runId}`,
            labels: {},
            deploymentId,
            sealed,
            ports,
          });
          bridges.push(network.bridge);
          return network;
        },
        removeLeftover: async () => {},
      },
      sealPassthroughFalse: true,
      flushGraceMs: 0,
    };
  });

  after(async () => {
    await removeTestContainers(docker, runId);
    await Promise.all(opened.map((c) => c.close().catch(() => undefined)));
    await Promise.all([collector, metrics, openedPort].map((s) => s?.close()));
  });

  /** A case as executeCase opens it: its network, its container on it, its addresses bound. */
  async function openCase(p: {
    who: string;
    runtimeSpec?: Record<string, unknown>;
    mockConfig?: unknown;
    startCommand?: string;
  }): Promise<OpenedCase> {
    const runCaseId = nextCaseId++;
    const example = platformMessageExample();
    const rawSpec = { agent_image: BUSYBOX, case_exec_command: 'true', ...p.runtimeSpec };
    const exampleCase = (example.run_cases as Array<Record<string, unknown>>)[0] ?? {};
    const parsed = parseExperimentMessage(
      JSON.stringify({
        ...example,
        agent: { ...(example.agent as object), runtime_spec_json: rawSpec },
        run_cases: [
          {
            ...exampleCase,
            run_case_id: String(runCaseId),
            ...(p.mockConfig === undefined ? {} : { mock_config: p.mockConfig }),
          },
        ],
      }),
    );
    assert.ok(parsed.ok, parsed.ok ? '' : parsed.error);
    const request: ExperimentRunRequested = parsed.message;
    const caseInput = request.run_cases[0];
    assert.ok(caseInput);
    const spec = resolveCaseSpec(rawSpec, {
      caseTimeoutSeconds: 60,
      limits: { memoryMb: 64, cpus: 0.5, pidsLimit: 64 },
      hardening: { noNewPrivileges: true, dropAllCapabilities: true },
    });
    const network = await openCaseNetwork(deps, { request, caseInput, spec, log });
    let closed: Promise<RecordedRequest[]> | undefined;
    const close = () => (closed ??= network.close().then((r) => r.requests as RecordedRequest[]));
    try {
      const container = await sandbox.createAndStart(
        baseSpec(runId, {
          startCommand: p.startCommand ?? 'sleep infinity',
          env: network.env,
          network: network.network ?? spec.dockerNetwork,
          hostAddress: network.hostAddress,
          files: network.files,
        }),
      );
      network.bindContainer(container.addresses);
      const c: OpenedCase = {
        network,
        networkName: network.network,
        gatewayUrl: network.mockBaseUrl,
        addresses: container.addresses,
        async exec(command) {
          const r = await sandbox.exec(container.containerId, { command, timeoutMs: 120_000 });
          assert.equal(r.timedOut, false, `${p.who}: ${command}`);
          return r.stdout.trim();
        },
        async close() {
          await sandbox.remove(container.containerId);
          return close();
        },
      };
      opened.push(c);
      return c;
    } catch (err) {
      await close();
      throw err;
    }
  }

  const whoRule = (who: string) => ({
    passthrough: false,
    rules: [{ name: 'who', match: { path: '/v1/who' }, response: { json: { case: who } } }],
  });

  test('cases reach neither each other nor the host, only their own collector, gateway and opened ports', async () => {
    // A: serves a directory listing on port 8000, as in the issue's report.
    const a = await openCase({
      who: 'A',
      mockConfig: { ...whoRule('A'), passthrough: true },
      startCommand:
        'mkdir -p /tmp/www && echo secret-of-A > /tmp/www/index.html && httpd -f -p 8000 -h /tmp/www',
    });
    const b = await openCase({
      who: 'B',
      mockConfig: { ...whoRule('B'), passthrough: true },
      runtimeSpec: { allow_host_ports: [openedPort.port] },
    });
    const sealed = await openCase({ who: 'S', mockConfig: whoRule('S') });
    assert.ok(a.networkName && b.networkName && sealed.networkName, 'each case has a network of its own');
    assert.equal(new Set([a.networkName, b.networkName, sealed.networkName]).size, 3);
    const [aIp] = a.addresses;
    assert.ok(aIp);
    const aGateway = new URL(a.gatewayUrl);
    const sealedGateway = new URL(sealed.gatewayUrl);
    const bHost = new URL(b.gatewayUrl).hostname;

    // Controls: A's server runs, and each gateway answers its own case.
    assert.match(await a.exec(httpScript('http://127.0.0.1:8000', '/')), /secret-of-A\s+status=0/);
    for (const [c, who] of [
      [a, 'A'],
      [b, 'B'],
      [sealed, 'S'],
    ] as const)
      assert.match(
        await c.exec(httpScript(c.gatewayUrl, WHO_URL)),
        new RegExp(`\\{"case":"${who}"\\} status=0`),
      );

    const hostAddresses = [bHost, bridgeIp, ...hostLanAddresses()];
    const probes = probeResults(
      await b.exec(
        probeScript([
          [aIp, 8000],
          [aGateway.hostname, Number(aGateway.port)],
          [sealedGateway.hostname, Number(sealedGateway.port)],
          ...hostAddresses.flatMap((ip): Array<[string, number]> => [
            [ip, metrics.port],
            [ip, RABBITMQ_PORT],
          ]),
          [METADATA, 80],
          ['host.docker.internal', collector.port],
          ['host.docker.internal', openedPort.port],
        ]),
      ),
    );
    const expectNotOpen = [
      `${aIp}:8000`,
      `${aGateway.hostname}:${aGateway.port}`,
      `${sealedGateway.hostname}:${sealedGateway.port}`,
      ...hostAddresses.flatMap((ip) => [`${ip}:${metrics.port}`, `${ip}:${RABBITMQ_PORT}`]),
    ];
    for (const target of expectNotOpen) {
      const outcome = probes.get(target);
      assert.ok(outcome !== undefined && outcome !== 'open', `${target}: ${outcome}`);
    }
    // Reset by our rule at once (without it the SYN would be forwarded and time out).
    assert.equal(probes.get(`${METADATA}:80`), 'refused');
    assert.equal(probes.get(`host.docker.internal:${collector.port}`), 'open');
    assert.equal(probes.get(`host.docker.internal:${openedPort.port}`), 'open');
    assert.match(
      await b.exec(`grep host.docker.internal /etc/hosts`),
      new RegExp(`^${bHost.replace(/\./g, '\\.')}\\s`),
    );

    // The port B's spec opened is B's alone.
    const aProbes = probeResults(await a.exec(probeScript([['host.docker.internal', openedPort.port]])));
    assert.notEqual(aProbes.get(`host.docker.internal:${openedPort.port}`), 'open');
    // Control: the host listener is reachable where isolation does not apply (the default bridge).
    const outsider = await openCase({ who: 'D', runtimeSpec: { docker_network: 'bridge' } });
    assert.equal(outsider.networkName, undefined);
    assert.match(
      await outsider.exec(httpScript(`http://${bridgeIp}:${metrics.port}`, '/')),
      /metrics status=0/,
    );

    // Nothing of B's probes reached A's or the sealed gateway's record.
    const aRequests = await a.close();
    const sealedRequests = await sealed.close();
    const bRequests = await b.close();
    assert.deepEqual(
      aRequests.map((r) => r.url),
      ['http://api.test/v1/who'],
    );
    assert.deepEqual(
      sealedRequests.map((r) => r.url),
      ['http://api.test/v1/who'],
    );
    assert.deepEqual(
      bRequests.map((r) => r.url),
      ['http://api.test/v1/who'],
    );
  });

  test("a gateway answers 403 to any other source (also a sealed case's), records nothing, and serves its own case", async () => {
    const target = await openCase({ who: 'T', mockConfig: { ...whoRule('T'), passthrough: true } });
    const sealed = await openCase({ who: 'S', mockConfig: whoRule('S') });
    // An opted-out case on Docker's default bridge: its packets to host addresses are not filtered,
    // so only the gateways' own check stands between it and them.
    const outsider = await openCase({
      who: 'D',
      runtimeSpec: { docker_network: 'bridge' },
      mockConfig: { ...whoRule('D'), passthrough: true },
    });
    assert.equal(outsider.networkName, undefined);

    for (const victim of [target, sealed]) {
      const gateway = victim.gatewayUrl;
      const attempts = [
        httpScript(gateway, WHO_URL),
        httpScript(gateway, '/v1/who'),
        httpScript(gateway, 'api.test:443', 'CONNECT'),
        httpScript(gateway, '/api/otel/v1/traces', 'POST', '{}'),
      ];
      for (const attempt of attempts) {
        const answer = await outsider.exec(attempt);
        assert.match(answer, /^HTTP\/1\.1 403 /, `${gateway}: ${attempt}\n${answer}`);
        assert.doesNotMatch(answer, /"case":/);
      }
    }
    // Nor is the host itself T's case (it reaches T's gateway from the network's gateway address).
    const fromHost = await new Promise<number | undefined>((resolve, reject) =>
      http.get(`${target.gatewayUrl}/v1/who`, (res) => resolve(res.resume().statusCode)).on('error', reject),
    );
    assert.equal(fromHost, 403);
    // Its own gateway admits it (its address bound after start), and T's admits T.
    assert.match(await outsider.exec(httpScript(outsider.gatewayUrl, WHO_URL)), /\{"case":"D"\} status=0/);
    assert.match(await target.exec(httpScript(target.gatewayUrl, WHO_URL)), /\{"case":"T"\} status=0/);

    assert.deepEqual(
      (await target.close()).map((r) => r.url),
      ['http://api.test/v1/who'],
    );
    assert.deepEqual(await sealed.close(), []);
    assert.deepEqual(
      (await outsider.close()).map((r) => r.url),
      ['http://api.test/v1/who'],
    );
  });

  test('closing a case removes its network and every firewall rule it added', async () => {
    await Promise.all(opened.map((c) => c.close()));
    assert.ok(bridges.length > 0);
    const rules = await iptablesRules();
    for (const bridge of bridges) assert.doesNotMatch(rules, new RegExp(bridge), bridge);
    for (const c of opened)
      if (c.networkName) assert.equal(await networkExists(c.networkName), false, c.networkName);
  });
});
