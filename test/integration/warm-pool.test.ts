import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, utimes } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { createDockerClient } from '../../src/docker/docker-client';
import { DockerSandbox } from '../../src/docker/docker-sandbox';
import { createIsolatedNetwork, reapIsolatedNetworks } from '../../src/docker/isolated-network';
import { LABELS } from '../../src/docker/labels';
import { OrphanReaper } from '../../src/docker/orphan-reaper';
import { Semaphore } from '../../src/docker/semaphore';
import {
  BEACON_STALE_MS,
  OwnerBeacon,
  WarmPool,
  warmPoolOwner,
  warmPoolOwnership,
  type WarmSandbox,
} from '../../src/docker/warm-pool';
import {
  captureLogger,
  cliInspect,
  ensureBenchImages,
  newTestRunId,
  SOCKET_PATH,
  waitFor,
} from './docker-fixtures';
import { warmTemplate } from './warm-pool-fixtures';

const docker = createDockerClient(SOCKET_PATH);
const runId = newTestRunId();
const deploymentId = `test-${runId}`;
const { log } = captureLogger();
const CASES = 50;
const PARALLEL = 5;

/** Containers (any state) and networks of this test's deployment. */
async function leftovers(): Promise<{ containers: string[]; networks: string[] }> {
  const label = [`${LABELS.deployment}=${deploymentId}`];
  const containers = await docker.listContainers({ all: true, filters: { label } });
  const networks = await docker.listNetworks({ filters: { label } });
  return { containers: containers.map((c) => c.Id), networks: networks.map((n) => n.Name) };
}

describe('WarmPool (real Docker)', () => {
  let caseFilesDir: string;
  let sandbox: DockerSandbox;
  const live = new Semaphore(16);

  function newPool(p: { size: number; idleMs: number }): WarmPool {
    return new WarmPool({
      sandbox,
      liveContainers: live,
      maxLiveContainers: 16,
      owner: warmPoolOwner(),
      createNetwork: ({ name, sealed, ports, labels }) =>
        createIsolatedNetwork(docker, { name, labels, deploymentId, sealed, ports }),
      log,
      ...p,
    });
  }

  before(async () => {
    await ensureBenchImages(docker);
    caseFilesDir = await mkdtemp(path.join(tmpdir(), 'warm-pool-test-'));
    sandbox = new DockerSandbox(docker, new Semaphore(4), log, { deploymentId, caseFilesDir });
  });

  after(async () => {
    const { containers, networks } = await leftovers();
    await Promise.all(containers.map((id) => docker.getContainer(id).remove({ force: true, v: true })));
    for (const name of networks)
      await docker
        .getNetwork(name)
        .remove()
        .catch(() => undefined);
    await reapIsolatedNetworks(docker, { deploymentId, minAgeMs: 0 });
    await rm(caseFilesDir, { recursive: true, force: true });
  });

  test(`${CASES} cases, ${PARALLEL} at a time, each on a warm container of its own network: each sees only its own /benchmark, env and processes`, async () => {
    const pool = newPool({ size: 4, idleMs: 3_600_000 });
    const template = warmTemplate({ ownNetwork: { sealed: false, ports: [] } });
    const seen = new Set<string>();
    let next = 0;
    /** A claim misses until the refill caught up: such a case waits for a warm one here (a real case would go cold). */
    async function claimWarm(): Promise<WarmSandbox> {
      let warm: WarmSandbox | undefined;
      await waitFor(async () => (warm = pool.claim(template)) !== undefined, 60_000, 'a warm container');
      return warm!;
    }
    async function runCase(i: number): Promise<void> {
      const warm = await claimWarm();
      assert.ok(!seen.has(warm.name), `${warm.name} was handed out twice`);
      seen.add(warm.name);
      assert.ok(warm.network, 'a warm container of a template with its own network comes with it');
      const secret = `case-secret-${i}-x`;
      const container = await live.run(() =>
        warm.start({
          ...template.container,
          name: `agentbench-case-${runId}-${i}`,
          env: { CASE_SECRET: secret },
          labels: {},
          files: [{ path: '/benchmark/case.json', content: `{"case":${i}}` }],
          network: warm.network!.name,
          hostAddress: warm.network!.gatewayIp,
        }),
      );
      try {
        assert.equal(container.name, warm.name);
        // The env reaches every exec, never the container's own config.
        assert.ok(!cliInspect(container.containerId).Config.Env.some((e) => e.includes('CASE_SECRET')));
        const first = await sandbox.exec(container.containerId, {
          command: `sleep 3000${i} >/dev/null 2>&1 & echo "$CASE_SECRET"`,
          timeoutMs: 20_000,
        });
        assert.equal(first.stdout.trim(), secret);
        const look = await sandbox.exec(container.containerId, {
          command: [
            'echo "files=$(ls -A /benchmark | tr "\\n" " ")"',
            'echo "case=$(cat /benchmark/case.json)"',
            'echo "env=$CASE_SECRET"',
            // Every process's command line and environment in the container.
            'for d in /proc/[0-9]*; do echo "proc=$(tr "\\0" " " < $d/cmdline 2>/dev/null)"; tr "\\0" "\\n" < $d/environ 2>/dev/null | grep CASE_SECRET; done; true',
          ].join('\n'),
          timeoutMs: 20_000,
        });
        const out = look.stdout;
        assert.equal(look.exitCode, 0, look.stderr);
        assert.match(out, /^files=case\.json $/m);
        assert.match(out, new RegExp(`^case=\\{"case":${i}\\}$`, 'm'));
        assert.match(out, new RegExp(`^env=${secret}$`, 'm'));
        const secrets = new Set(out.match(/case-secret-\d+-x/g));
        assert.deepEqual([...secrets], [secret], 'no other case env in any process');
        const sleeps = new Set(out.match(/sleep 3000\d+/g));
        assert.deepEqual([...sleeps], [`sleep 3000${i}`], "no other case's process");
      } finally {
        await sandbox.remove(container.containerId);
        await warm.network!.remove();
      }
    }
    try {
      await Promise.all(
        Array.from({ length: PARALLEL }, async () => {
          while (next < CASES) await runCase(next++);
        }),
      );
      assert.equal(seen.size, CASES);
    } finally {
      await pool.close();
    }
    const { containers, networks } = await leftovers();
    assert.deepEqual(containers, [], 'the pool removed its warm containers on close');
    assert.deepEqual(networks, [], 'and their networks');
  });

  test('a pool nobody claims from drains to 0; it fills only once claims come', async () => {
    const pool = newPool({ size: 3, idleMs: 1_000 });
    const template = warmTemplate();
    try {
      assert.equal(pool.claim(template), undefined, 'a new pool is empty: the first case is cold');
      await waitFor(async () => pool.idleCount === 3, 60_000, 'the pool to fill');
      assert.equal((await leftovers()).containers.length, 3);
      await waitFor(async () => pool.idleCount === 0, 30_000, 'the pool to drain');
      await waitFor(
        async () => (await leftovers()).containers.length === 0,
        30_000,
        'its containers removed',
      );
    } finally {
      await pool.close();
    }
  });

  test('kill -9 of the worker with a full pool: the reaper removes every warm container (and network); while it lived, none', async () => {
    const size = 3;
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        path.resolve(__dirname, '../fixtures/warm-pool-owner.ts'),
        deploymentId,
        caseFilesDir,
        String(size),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const exited = new Promise((resolve) => child.once('exit', resolve));
    const reaper = new OrphanReaper({
      sandbox,
      log,
      deploymentId,
      minAgeSeconds: 0,
      // No case container here: anything but a warm one would be a test bug.
      judge: warmPoolOwnership(async () => ({ verdict: 'unknown', reason: 'not a warm container' }), {
        beaconDir: caseFilesDir,
      }),
    });
    try {
      await waitFor(async () => output.includes('full'), 90_000, `the child's pool to fill: ${output}`);
      const { containers } = await leftovers();
      assert.equal(containers.length, size);
      const owner = cliInspect(containers[0]!).Config.Labels[LABELS.pool];
      assert.equal(owner, warmPoolOwner(child.pid));
      assert.equal((await reaper.sweep()).removed.length, 0, 'the owner lives: its pool is kept');
      child.kill('SIGKILL');
      await exited;
      const swept = await reaper.sweep();
      assert.equal(swept.removed.length, size);
      await reapIsolatedNetworks(docker, { deploymentId, minAgeMs: 0 });
      assert.deepEqual(await leftovers(), { containers: [], networks: [] });
    } finally {
      child.kill('SIGKILL');
    }
  });

  test('an owner in another pid namespace (another pod on the node) is judged by its liveness file: fresh -> kept, stale -> orphan, none -> unknown', async () => {
    // Pid namespace 1 is never a real one's inode: /proc here cannot tell about this owner.
    const owner = `${hostname()}:1:4242:777`;
    const labels = { [LABELS.pool]: owner };
    const judge = warmPoolOwnership(async () => ({ verdict: 'unknown', reason: 'not a warm container' }), {
      beaconDir: caseFilesDir,
    });
    const verdict = async () => (await judge(labels, { id: 'c' })).verdict;
    assert.equal(await verdict(), 'unknown', 'no liveness file: cannot tell');
    const beacon = new OwnerBeacon(caseFilesDir, owner);
    await beacon.start();
    try {
      assert.equal(await verdict(), 'wanted');
      const files = (await readdir(caseFilesDir)).filter((f) => f.startsWith('.warm-owner-'));
      assert.equal(files.length, 1);
      const past = new Date(Date.now() - BEACON_STALE_MS - 5_000);
      await utimes(path.join(caseFilesDir, files[0]!), past, past);
      assert.equal(await verdict(), 'orphan', 'untouched past the stale time: its owner is gone');
    } finally {
      await beacon.stop();
    }
    assert.equal(await verdict(), 'unknown', 'a closed pool removes its file');
  });
});
