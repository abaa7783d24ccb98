import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import os from 'node:os';
import { promisify } from 'node:util';
import { createDockerClient, pingDocker } from '../../src/docker/docker-client';
import { DockerSandbox } from '../../src/docker/docker-sandbox';
import { statusCode } from '../../src/docker/errors';
import { Semaphore } from '../../src/docker/semaphore';
import type { CaseGateway, MockGatewayManager } from '../../src/mock-gateway/case-gateway';
import { dockerHostAddress } from '../../src/mock-gateway/host-address';
import {
  createIsolatedNetwork,
  reapIsolatedNetworks,
  type IsolatedNetwork,
} from '../../src/docker/isolated-network';
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
  type Upstream,
} from './mock-gateway-fixtures';

/**
 * passthrough:false cases on a sealed network: the container reaches its gateway and nothing else,
 * even when it ignores the proxy env. Runs as root (creates networks and host firewall rules).
 */

const run = promisify(execFile);
const docker = createDockerClient(SOCKET_PATH);
const runId = newTestRunId();
const { log } = captureLogger();
const sandbox = new DockerSandbox(docker, new Semaphore(4), log);
const deploymentId = `test-${runId}`;

/** IPv4 addresses of this host outside Docker's bridges: "outside-ish" targets that listen on 0.0.0.0. */
function hostLanAddresses(): string[] {
  return Object.entries(os.networkInterfaces())
    .filter(([name]) => !/^(lo|docker\d*|br-|abm|veth)/.test(name))
    .flatMap(([, addresses]) =>
      (addresses ?? []).filter((a) => a.family === 'IPv4' && !a.internal).map((a) => a.address),
    );
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

async function container(
  env: Record<string, string>,
  network?: string,
  files: Array<{ path: string; content: string }> = [],
) {
  const { containerId } = await sandbox.createAndStart(
    baseSpec(runId, {
      image: AGENT_BASE,
      env,
      network,
      files,
      limits: { memoryMb: 256, cpus: 1, pidsLimit: 128 },
    }),
  );
  return async (command: string) => {
    const r = await sandbox.exec(containerId, { command, timeoutMs: 60_000 });
    return r.stdout.trim();
  };
}

/** Python socket connects, one line per target: "host:port ok" or "host:port blocked <error>". */
function probeScript(targets: Array<[string, number]>, timeoutSeconds: number): string {
  return `python3 - <<'PY'
import socket
for host, port in ${JSON.stringify(targets)}:
    s = socket.socket()
    s.settimeout(${timeoutSeconds})
    try:
        s.connect((host, port))
        print("%s:%d ok" % (host, port))
    except OSError as e:
        print("%s:%d blocked %s" % (host, port, type(e).__name__))
    finally:
        s.close()
PY`;
}

describe('sealed mock gateway network (real Docker, host firewall)', () => {
  let upstream: Upstream;
  let bridgeIp: string;
  let gatewayManager: MockGatewayManager;
  const gateways: CaseGateway[] = [];
  const networks: IsolatedNetwork[] = [];

  before(async () => {
    assert.ok(await pingDocker(docker, 5000), 'docker daemon must be reachable');
    await ensureBenchImages(docker);
    upstream = await startEchoUpstream();
    bridgeIp = await dockerHostAddress(docker);
    gatewayManager = manager(log, {
      bindHost: bridgeIp,
      advertisedHost: 'host.docker.internal',
      otelForward: recordingOtelSink().forward,
    });
  });

  after(async () => {
    await removeTestContainers(docker, runId);
    await Promise.all(gateways.map((g) => g.close()));
    await Promise.all(networks.map((n) => n.remove()));
    await upstream.close();
  });

  function sealedNetwork(): Promise<IsolatedNetwork> {
    return createIsolatedNetwork(docker, {
      name: `agentbench-case-sealed-${runId}-${networks.length}`,
      labels: {},
      deploymentId,
      sealed: true,
    });
  }

  /** A sealed case as openCaseNetwork makes it: its network, then its gateway on it. */
  async function startSealed(raw: unknown): Promise<CaseGateway & { network: string }> {
    const network = await sealedNetwork();
    networks.push(network);
    const g = await gatewayManager.start({
      runCaseId: 8100 + gateways.length,
      config: mockConfig(raw),
      network,
    });
    gateways.push(g);
    return Object.assign(g, { network: network.name });
  }

  test('only the gateway is reachable: proxied requests work, a client ignoring the proxy env gets no connection out', async () => {
    const control = await container({});
    const directTargets = [bridgeIp, ...hostLanAddresses()].map(
      (ip) => `http://${ip}:${upstream.port}/direct`,
    );
    // Control: the same direct requests work from an ordinary container, so "blocked" below means sealed.
    for (const url of directTargets)
      assert.match(await control(`curl -s -m 5 ${url}`), /"url":"\/direct"/, url);

    const g = await startSealed({
      passthrough: false,
      rules: [{ name: 'ping', match: { path: '/v1/ping' }, response: { json: { pong: true } } }],
    });
    const gatewayIp = new URL(g.baseUrl).hostname;
    assert.match(gatewayIp, /^\d+\.\d+\.\d+\.\d+$/);
    assert.equal(g.proxyEnv().NO_PROXY, `127.0.0.1,localhost,${gatewayIp}`);

    const sealed = await container(g.proxyEnv(), g.network, g.containerFiles());
    const viaProxy = await sealed(
      `curl -s -m 10 http://api.test/v1/ping; echo; curl -s -m 10 https://api.test/v1/ping; echo; ` +
        `curl -s -m 10 ${g.baseUrl}/v1/ping; echo; ` +
        `curl -s -m 10 -X POST -d '{}' http://host.docker.internal:14318/api/otel/v1/traces`,
    );
    assert.deepEqual(viaProxy.split('\n'), [
      '{"pong":true}',
      '{"pong":true}',
      '{"pong":true}',
      '{"ok":true,"mock":"otel-default","inserted":0}',
    ]);

    upstream.requests.length = 0;
    const curlDirect = await sealed(
      directTargets
        .map((url) => `curl -s -m 5 --noproxy '*' -o /dev/null ${url}; echo "${url} exit=$?"`)
        .join('\n'),
    );
    for (const line of curlDirect.split('\n')) assert.match(line, /exit=(7|28)$/, line);

    const probes = await sealed(
      probeScript(
        [
          [gatewayIp, upstream.port],
          [bridgeIp, upstream.port],
          ...hostLanAddresses().map((ip): [string, number] => [ip, upstream.port]),
        ],
        3,
      ),
    );
    for (const line of probes.split('\n')) assert.match(line, / blocked /, line);
    // A single SYN at most (timeout below the first retransmission), to one public address.
    assert.match(await sealed(probeScript([['1.1.1.1', 80]], 0.9)), /^1\.1\.1\.1:80 blocked /);
    assert.deepEqual(upstream.requests, [], 'no direct request reached the host');
  });

  test('sealed with passthrough: the gateway still forwards, bypassing it still fails', async () => {
    const g = await startSealed({ passthrough: true, rules: [] });
    const sealed = await container(g.proxyEnv(), g.network);
    const url = `http://${bridgeIp}:${upstream.port}/through-gateway`;
    assert.match(await sealed(`curl -s -m 10 ${url}`), /"url":"\/through-gateway"/);
    assert.match(await sealed(`curl -s -m 5 --noproxy '*' ${url}; echo "exit=$?"`), /exit=(7|28)$/);
  });

  test('remove() takes the network (even with the container still attached) and its firewall rules', async () => {
    const g = await startSealed({ passthrough: false, rules: [] });
    const network = networks.at(-1) as IsolatedNetwork;
    const gatewayIp = new URL(g.baseUrl).hostname;
    await container(g.proxyEnv(), network.name);
    assert.match(
      await iptablesRules(),
      new RegExp(`-d ${gatewayIp.replace(/\./g, '\\.')}/32 -p tcp -m tcp --dport ${g.port} -j ACCEPT`),
    );
    await g.close();
    await network.remove();
    assert.equal(await networkExists(network.name), false);
    assert.doesNotMatch(await iptablesRules(), new RegExp(network.bridge));
  });

  test("reapIsolatedNetworks removes its deployment's old unattached networks and their rules, and leaves young ones", async () => {
    const network = await sealedNetwork();
    try {
      assert.match(
        await iptablesRules(),
        new RegExp(`-A INPUT -i ${network.bridge} -j AGENTBENCH-${network.bridge}`),
      );
      assert.deepEqual(await reapIsolatedNetworks(docker, { deploymentId, minAgeMs: 3_600_000 }), []);
      assert.equal(await networkExists(network.name), true);
      assert.deepEqual(
        await reapIsolatedNetworks(docker, { deploymentId: `${deploymentId}-other`, minAgeMs: 0 }),
        [],
      );
      assert.ok((await reapIsolatedNetworks(docker, { deploymentId, minAgeMs: 0 })).includes(network.name));
      assert.equal(await networkExists(network.name), false);
      assert.doesNotMatch(await iptablesRules(), new RegExp(network.bridge));
    } finally {
      await network.remove();
    }
  });
});
