import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDockerClient, pingDocker } from '../../src/docker/docker-client';
import { DockerSandbox } from '../../src/docker/docker-sandbox';
import { OrphanReaper } from '../../src/docker/orphan-reaper';
import { Semaphore } from '../../src/docker/semaphore';
import {
  baseSpec,
  captureLogger,
  cliInspect,
  ensureBenchImages,
  newTestRunId,
  removeTestContainers,
  SOCKET_PATH,
} from './docker-fixtures';

const docker = createDockerClient(SOCKET_PATH);
const runId = newTestRunId();
const root = mkdtempSync(join(tmpdir(), 'agentbench-case-files-test-'));
const CASE = `{"user_input": "it's \\"quoted\\" $(echo pwned)\\nline2"}\n`;

function sandboxWith(delivery: 'auto' | 'bind' | 'copy', dir = join(root, delivery)) {
  const { log, lines } = captureLogger();
  return {
    sandbox: new DockerSandbox(docker, new Semaphore(4), log, {
      caseFileDelivery: delivery,
      caseFilesDir: dir,
    }),
    lines,
    dir,
  };
}

describe('case files reach the container (real Docker)', () => {
  before(async () => {
    assert.ok(await pingDocker(docker, 5000), 'docker daemon must be reachable');
    await ensureBenchImages(docker);
  });

  after(async () => {
    await removeTestContainers(docker, runId);
    rmSync(root, { recursive: true, force: true });
  });

  test('auto binds a per-container directory read-only at /benchmark; remove deletes it', async () => {
    const { sandbox, dir } = sandboxWith('auto');
    const spec = baseSpec(runId, {
      user: '65534',
      files: [
        { path: '/benchmark/case.json', content: CASE, mode: 0o644 },
        { path: '/benchmark/extra.pem', content: 'pem', mode: 0o600 },
      ],
    });
    const { containerId, name } = await sandbox.createAndStart(spec);
    assert.equal(sandbox.caseFileDelivery, 'bind');

    const mounts = cliInspect(containerId).Mounts as Array<{
      Type?: string;
      Source?: string;
      Destination?: string;
      RW?: boolean;
    }>;
    assert.deepEqual(
      mounts.map((m) => ({ type: m.Type, source: m.Source, destination: m.Destination, rw: m.RW })),
      [{ type: 'bind', source: join(dir, name), destination: '/benchmark', rw: false }],
    );
    const read = await sandbox.exec(containerId, { command: 'cat /benchmark/case.json', timeoutMs: 10_000 });
    assert.deepEqual(
      { exitCode: read.exitCode, stdout: read.stdout },
      { exitCode: 0, stdout: CASE },
      'a non-root user reads it intact',
    );
    const modes = await sandbox.exec(containerId, {
      command: 'stat -c %a /benchmark/case.json /benchmark/extra.pem',
      timeoutMs: 10_000,
    });
    assert.equal(modes.stdout, '644\n600\n');
    // As root, the owner of the host directory: only the read-only mount can refuse.
    const write = await sandbox.exec(containerId, {
      command: 'echo x > /benchmark/new',
      user: '0',
      timeoutMs: 10_000,
    });
    assert.notEqual(write.exitCode, 0);
    assert.match(write.stderr, /Read-only file system/);

    await sandbox.remove(containerId);
    assert.equal(existsSync(join(dir, name)), false, 'the host directory goes with the container');
  });

  test('copy puts the files into the container itself; nothing on the host', async () => {
    const { sandbox, dir } = sandboxWith('copy');
    const { containerId } = await sandbox.createAndStart(
      baseSpec(runId, { files: [{ path: '/benchmark/case.json', content: CASE }] }),
    );
    assert.equal(cliInspect(containerId).Mounts.length, 0);
    const read = await sandbox.exec(containerId, { command: 'cat /benchmark/case.json', timeoutMs: 10_000 });
    assert.equal(read.stdout, CASE);
    assert.equal(existsSync(dir), false);
    await sandbox.remove(containerId);
  });

  test('bind: a file outside /benchmark is still copied', async () => {
    const { sandbox } = sandboxWith('bind');
    const { containerId } = await sandbox.createAndStart(
      baseSpec(runId, {
        files: [
          { path: '/benchmark/case.json', content: CASE },
          { path: '/etc/agentbench/extra.txt', content: 'copied' },
        ],
      }),
    );
    const read = await sandbox.exec(containerId, {
      command: 'cat /etc/agentbench/extra.txt /benchmark/case.json',
      timeoutMs: 10_000,
    });
    assert.equal(read.stdout, `copied${CASE}`);
    await sandbox.remove(containerId);
  });

  test('auto falls back to copy, for good, when the daemon cannot see the directory; bind then fails clearly', () => {
    // A private mount namespace with a tmpfs over the directory: what this process writes there is
    // invisible to dockerd, as for a worker in a container that uses the host's daemon.
    const dir = join(root, 'foreign');
    execFileSync('mkdir', ['-p', dir]);
    const fixture = join(__dirname, '..', 'fixtures', 'case-files-foreign-daemon.ts');
    const out = execFileSync(
      'unshare',
      [
        '--mount',
        '--propagation',
        'private',
        'sh',
        '-c',
        'mount -t tmpfs tmpfs "$1" && exec node --import tsx "$2" "$1" "$3"',
        'sh',
        dir,
        fixture,
        runId,
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );
    const result = JSON.parse(out.trim().split('\n').pop() ?? '{}') as {
      auto: { delivery: string; content?: string; codes?: string[]; error?: string };
      bind: { delivery: string; error?: string };
    };
    assert.deepEqual(result.auto, {
      delivery: 'copy',
      content: '{"from":"a foreign namespace"}',
      codes: ['SANDBOX_CASE_FILES_COPY'],
    });
    assert.equal(result.bind.delivery, 'bind');
    assert.match(result.bind.error ?? '', /^E_DOCKER_CREATE: .*bind source path does not exist/);
  });

  test('the reaper removes directories whose container is gone, and keeps the live and the young', async () => {
    const { sandbox, dir } = sandboxWith('bind', join(root, 'reaper'));
    const live = await sandbox.createAndStart(
      baseSpec(runId, { files: [{ path: '/benchmark/case.json', content: CASE }] }),
    );
    await sandbox.caseFiles.write('agentbench-case-1-deadbeef00-a1', [
      { path: '/benchmark/case.json', content: CASE },
    ]);
    const { log } = captureLogger();
    const reaper = (minAgeSeconds: number) =>
      new OrphanReaper({
        sandbox,
        log,
        deploymentId: `test-${runId}`,
        minAgeSeconds,
        judge: () => Promise.resolve({ verdict: 'wanted' }),
      });

    await reaper(3600).sweep();
    assert.deepEqual(
      readdirSync(dir).sort(),
      [live.name, 'agentbench-case-1-deadbeef00-a1'].sort(),
      'young directories are kept',
    );
    await reaper(0).sweep();
    assert.deepEqual(readdirSync(dir), [live.name], 'only the live container keeps its directory');
    await sandbox.remove(live.containerId);
    assert.deepEqual(readdirSync(dir), []);
  });
});
