import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createDockerClient, pingDocker } from '../../src/docker/docker-client';
import { recordedCaseCmd } from '../../src/docker/case-command-record';
import { DockerSandbox, type ExecResult } from '../../src/docker/docker-sandbox';
import { Semaphore } from '../../src/docker/semaphore';
import {
  AGENT_BASE,
  baseSpec,
  BUSYBOX,
  captureLogger,
  ensureBenchImages,
  newTestRunId,
  removeTestContainers,
  SOCKET_PATH,
  waitFor,
} from './docker-fixtures';

/**
 * The case command's record in its container (src/docker/case-command-record.ts), against the real
 * Docker engine: the recorded exec is the plain exec as far as its caller can tell, and a retry
 * whose worker did not start the command (the one that did was killed) adopts it from the record.
 */

const docker = createDockerClient(SOCKET_PATH);
const runId = newTestRunId();
const { log } = captureLogger();
const sandbox = new DockerSandbox(docker, new Semaphore(4), log);

const outcome = (r: ExecResult) => ({
  exitCode: r.exitCode,
  stdout: r.stdout,
  stderr: r.stderr,
  timedOut: r.timedOut,
});

/** Starts `command` the way the recording exec does, but detached: the worker that started it is "dead". */
async function startOrphanedCase(containerId: string, command: string, env: string[] = []): Promise<void> {
  const exec = await docker.getContainer(containerId).exec({
    Cmd: recordedCaseCmd(command),
    Env: ['AGENTBENCH_EXEC_TOKEN=orphaned0123456789abcdef', ...env],
    AttachStdout: false,
    AttachStderr: false,
  });
  await exec.start({ Detach: true });
}

/** Processes of the container whose command line starts with `marker`. */
async function running(containerId: string, marker: string): Promise<number> {
  const r = await sandbox.exec(containerId, {
    command: `for d in /proc/[0-9]*; do tr '\\0' ' ' < "$d/cmdline" 2>/dev/null; echo; done`,
    timeoutMs: 10_000,
  });
  return r.stdout.split('\n').filter((l) => l.startsWith(marker)).length;
}

describe('the recorded case command (real Docker)', () => {
  before(async () => {
    assert.ok(await pingDocker(docker, 5000), 'docker daemon must be reachable');
    await ensureBenchImages(docker);
  });
  after(async () => {
    await removeTestContainers(docker, runId);
  });

  for (const [image, user] of [
    [BUSYBOX, '65534'],
    [AGENT_BASE, undefined],
  ] as const) {
    test(`on ${image} (user ${user ?? 'image default'}) output and exit code are the plain exec's: metacharacters, non-zero exit, output over the cap`, async () => {
      const { containerId } = await sandbox.createAndStart(baseSpec(runId, { image, user }));
      const commands = [
        `echo "it's \\"quoted\\" $HOME"; printf 'no newline'`,
        'echo out; echo err >&2; exit 42',
        "head -c 1500000 /dev/zero | tr '\\0' a; echo END; head -c 1200000 /dev/zero | tr '\\0' b >&2",
        'kill -TERM $$',
      ];
      for (const command of commands) {
        const plain = await sandbox.exec(containerId, { command, timeoutMs: 30_000 });
        const recorded = await sandbox.execCase(containerId, { command, timeoutMs: 30_000 });
        assert.deepEqual(outcome(recorded), outcome(plain), command.slice(0, 60));
      }
      await sandbox.remove(containerId);
    });
  }

  test('a timeout still kills the whole tree, wrapper included, and returns what was printed until then', async () => {
    const { containerId } = await sandbox.createAndStart(baseSpec(runId));
    const r = await sandbox.execCase(containerId, {
      command: "sh -c 'sleep 1244' & (sleep 1245 &); echo started; echo warn >&2; wait",
      timeoutMs: 3000,
    });
    assert.equal(r.timedOut, true);
    assert.equal(r.stdout, 'started\n');
    assert.equal(r.stderr, 'warn\n');
    assert.equal(await running(containerId, 'sleep 124'), 0, 'no process of the case survives');
    assert.equal(await running(containerId, 'sh -c'), 0, 'nor its wrapper');
    await sandbox.remove(containerId);
  });

  test('a retry adopts a running case command: waits for its end and reads its outcome', async () => {
    const { containerId } = await sandbox.createAndStart(
      baseSpec(runId, { env: { BENCHMARK_MOCK_BASE_URL: 'http://10.1.2.3:9' } }),
    );
    await startOrphanedCase(
      containerId,
      `echo begun; sleep 2; echo '{"output":"adopted"}'; echo e >&2; exit 3`,
    );
    await waitFor(async () => (await running(containerId, 'sleep 2')) === 1, 5000, 'the orphaned case');

    const found = await sandbox.inspectPredecessor(containerId);
    assert.equal(found.kind, 'adoptable');
    if (found.kind !== 'adoptable') return;
    assert.equal(found.container.exitCode, null, 'still running');
    assert.equal(found.container.token, 'orphaned0123456789abcdef');
    assert.equal(found.container.env.BENCHMARK_MOCK_BASE_URL, 'http://10.1.2.3:9');
    assert.ok(Math.abs(found.container.startedAtMs - Date.now()) < 5000, 'its start time');

    const r = await sandbox.awaitCaseCommand(found.container, { timeoutMs: 30_000 });
    assert.deepEqual(outcome(r), {
      exitCode: 3,
      stdout: 'begun\n{"output":"adopted"}\n',
      stderr: 'e\n',
      timedOut: false,
    });

    const again = await sandbox.inspectPredecessor(containerId);
    assert.equal(again.kind === 'adoptable' ? again.container.exitCode : again.kind, 3, 'finished');
    if (again.kind === 'adoptable')
      assert.deepEqual(
        outcome(await sandbox.awaitCaseCommand(again.container, { timeoutMs: 0 })),
        outcome(r),
      );
    await sandbox.remove(containerId);
  });

  test('an adopted case command past its deadline is killed by its token and ends as a timeout', async () => {
    const { containerId } = await sandbox.createAndStart(baseSpec(runId));
    await startOrphanedCase(containerId, "echo partial; sh -c 'sleep 1246'; echo never");
    await waitFor(async () => (await running(containerId, 'sleep 1246')) === 1, 5000, 'the orphaned case');
    const found = await sandbox.inspectPredecessor(containerId);
    assert.equal(found.kind, 'adoptable');
    if (found.kind !== 'adoptable') return;

    const r = await sandbox.awaitCaseCommand(found.container, { timeoutMs: 1500 });
    assert.equal(r.timedOut, true);
    assert.equal(r.stdout, 'partial\n');
    assert.equal(await running(containerId, 'sleep 1246'), 0, 'the case tree is killed');
    assert.equal(await running(containerId, 'sh -c'), 0);
    await sandbox.remove(containerId);
  });

  test('an abort stops the wait; not adoptable: no record, a stopped container, a gone one', async () => {
    const { containerId } = await sandbox.createAndStart(baseSpec(runId));
    await startOrphanedCase(containerId, 'sleep 1247');
    await waitFor(async () => (await running(containerId, 'sleep 1247')) === 1, 5000, 'the orphaned case');
    const found = await sandbox.inspectPredecessor(containerId);
    assert.equal(found.kind, 'adoptable');
    if (found.kind === 'adoptable') {
      const controller = new AbortController();
      const waiting = sandbox.awaitCaseCommand(found.container, {
        timeoutMs: 60_000,
        signal: controller.signal,
      });
      controller.abort(new Error('case canceled'));
      await assert.rejects(waiting, (err: Error) => err.name === 'AbortError');
    }

    const fresh = await sandbox.createAndStart(baseSpec(runId));
    const none = await sandbox.inspectPredecessor(fresh.containerId);
    assert.deepEqual(
      none.kind === 'unadoptable' ? none.reason : none.kind,
      'the case command never started in it',
    );

    await docker.getContainer(fresh.containerId).kill();
    await waitFor(
      async () => (await sandbox.inspectState(fresh.containerId))?.running === false,
      10_000,
      'the container stopped',
    );
    const stopped = await sandbox.inspectPredecessor(fresh.containerId);
    assert.match(stopped.kind === 'unadoptable' ? stopped.reason : stopped.kind, /^container exited/);

    await sandbox.remove(fresh.containerId);
    await sandbox.remove(containerId);
    assert.deepEqual(await sandbox.inspectPredecessor(containerId), { kind: 'gone' });
  });
});
