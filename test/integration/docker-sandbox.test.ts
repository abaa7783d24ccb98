import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import type Dockerode from 'dockerode';
import { createDockerClient, pingDocker } from '../../src/docker/docker-client';
import { DockerSandbox, EXEC_OUTPUT_CAP_BYTES } from '../../src/docker/docker-sandbox';
import { DockerInfraError, SandboxSpecError } from '../../src/docker/errors';
import { LABELS } from '../../src/docker/labels';
import { Semaphore } from '../../src/docker/semaphore';
import { countDockerCalls } from '../../bench/support/docker-call-counter';
import {
  AGENT_BASE,
  baseSpec,
  BUSYBOX,
  captureLogger,
  cliInspect,
  ensureBenchImages,
  newTestRunId,
  removeTestContainers,
  SOCKET_PATH,
  TEST_RUN_LABEL,
  waitFor,
} from './docker-fixtures';

const docker = createDockerClient(SOCKET_PATH);
const runId = newTestRunId();
const { log } = captureLogger();
const sandbox = new DockerSandbox(docker, new Semaphore(4), log);

/**
 * Live (non-zombie) processes as "pid args" lines, read from /proc so it works on images without
 * `ps` (Debian minbase). The script itself contains none of the test's marker strings.
 */
const LIST_PROCESSES = `
for d in /proc/[0-9]*; do
  s=$(cat "$d/stat" 2>/dev/null) || continue
  state=\${s##*) }; state=\${state%% *}
  [ "$state" = Z ] && continue
  printf '%s %s\\n' "\${d#/proc/}" "$(tr '\\0' ' ' < "$d/cmdline" 2>/dev/null)"
done`;

/** Live processes whose command line *starts* with the marker (the parent shell merely mentions it). */
async function liveMarkers(containerId: string, markers: RegExp): Promise<string[]> {
  const r = await sandbox.exec(containerId, { command: LIST_PROCESSES, timeoutMs: 10_000 });
  assert.equal(r.exitCode, 0, r.stderr);
  return r.stdout.split('\n').filter((line) => markers.test(line.replace(/^\d+ /, '')));
}

async function startContainer(overrides: Parameters<typeof baseSpec>[1] = {}) {
  return sandbox.createAndStart(baseSpec(runId, overrides));
}

describe('DockerSandbox (real Docker)', () => {
  before(async () => {
    assert.ok(await pingDocker(docker, 5000), 'docker daemon must be reachable');
    await ensureBenchImages(docker);
  });

  after(async () => {
    await removeTestContainers(docker, runId);
  });

  test('pingDocker reports an unreachable socket as false', async () => {
    assert.equal(await pingDocker(createDockerClient('/nonexistent/docker.sock'), 1000), false);
  });

  test('create/start/exec: env, exec env and a file with shell metacharacters arrive intact', async () => {
    const content = `{"q": "it's \\"quoted\\" $(echo pwned) \`uname\` \${HOME}",\n  "multi": "line1\nline2"\n}\n`;
    const envValue = `a b "c" $(echo no) \`id\` 'd'`;
    const { containerId, name } = await startContainer({
      env: { CASE_VALUE: envValue, B_SECOND: '2', A_FIRST: '1' },
      files: [{ path: '/benchmark/case.json', content }],
    });
    assert.match(name, /^agentbench-test-/);

    const file = await sandbox.exec(containerId, { command: 'cat /benchmark/case.json', timeoutMs: 10_000 });
    assert.equal(file.exitCode, 0, file.stderr);
    assert.equal(file.stdout, content);

    const env = await sandbox.exec(containerId, {
      command: 'printf "%s|%s|%s" "$CASE_VALUE" "$EXTRA" "$(stat -c %a /benchmark/case.json)"',
      env: { EXTRA: 'exec-only' },
      timeoutMs: 10_000,
    });
    assert.deepEqual(
      { exitCode: env.exitCode, stdout: env.stdout, timedOut: env.timedOut },
      { exitCode: 0, stdout: `${envValue}|exec-only|644`, timedOut: false },
    );
    assert.ok(env.durationMs >= 0);

    const inspected = cliInspect(containerId);
    const userEnv = inspected.Config.Env.filter((e) => /^(A_FIRST|B_SECOND|CASE_VALUE)=/.test(e));
    assert.deepEqual(userEnv, ['A_FIRST=1', 'B_SECOND=2', `CASE_VALUE=${envValue}`], 'env is passed sorted');
    assert.equal(inspected.Config.Labels[LABELS.managed], 'true');
    assert.equal(inspected.Config.Labels[TEST_RUN_LABEL], runId);
    assert.ok(inspected.Config.Labels[LABELS.createdAt], 'created-at label is set');

    await sandbox.remove(containerId);
    assert.equal(await sandbox.inspectState(containerId), null);
  });

  test('exec as another user, and a non-zero exit with stdout and stderr kept apart', async () => {
    const { containerId } = await startContainer({ user: '65534' });
    const whoami = await sandbox.exec(containerId, { command: 'id -u', timeoutMs: 10_000 });
    assert.equal(whoami.stdout.trim(), '65534', 'the container user applies to exec');

    const r = await sandbox.exec(containerId, {
      command: 'echo out; echo err >&2; exit 42',
      timeoutMs: 10_000,
    });
    assert.deepEqual(
      { exitCode: r.exitCode, stdout: r.stdout, stderr: r.stderr, timedOut: r.timedOut },
      { exitCode: 42, stdout: 'out\n', stderr: 'err\n', timedOut: false },
    );
    const root = await sandbox.exec(containerId, { command: 'id -u', user: '0', timeoutMs: 10_000 });
    assert.equal(root.stdout.trim(), '0', 'exec user overrides the container user');
  });

  for (const [image, user] of [
    [BUSYBOX, '65534'],
    [AGENT_BASE, undefined],
  ] as const) {
    test(`exec timeout on ${image} (user ${user ?? 'image default'}) kills the command and all its descendants`, async () => {
      const { containerId } = await startContainer({ image, user });
      const markers = /^sleep 123[456]/;
      const running = sandbox.exec(containerId, {
        // A child shell, a background child and a double-forked grandchild reparented to init.
        command: "sh -c 'sleep 1234' & sleep 1235 & (sleep 1236 &) ; echo started; wait",
        timeoutMs: 4000,
      });
      await waitFor(
        async () => (await liveMarkers(containerId, markers)).length === 3,
        4000,
        'all three sleeps',
      );

      const r = await running;
      assert.equal(r.timedOut, true);
      assert.equal(r.stdout, 'started\n');
      assert.ok(r.durationMs >= 4000 && r.durationMs < 15_000, `durationMs=${r.durationMs}`);
      assert.deepEqual(
        await liveMarkers(containerId, markers),
        [],
        'no process of the timed-out exec survives',
      );

      if (image === BUSYBOX) {
        const ps = await sandbox.exec(containerId, { command: 'ps -o pid,stat,args', timeoutMs: 10_000 });
        assert.equal(ps.exitCode, 0, ps.stderr);
        const leftovers = ps.stdout.split('\n').filter((l) => /\d+ +[^Z ]\S* +sleep 123[456]/.test(l));
        assert.deepEqual(leftovers, [], ps.stdout);
      }
      await sandbox.remove(containerId);
    });
  }

  test('abort kills the in-container process and rejects with an AbortError', async () => {
    const { containerId } = await startContainer();
    const controller = new AbortController();
    const running = sandbox.exec(containerId, {
      command: 'sleep 1237',
      timeoutMs: 60_000,
      signal: controller.signal,
    });
    await waitFor(
      async () => (await liveMarkers(containerId, /^sleep 1237/)).length === 1,
      5000,
      'sleep 1237',
    );
    controller.abort(new Error('case canceled'));
    await assert.rejects(running, (err: Error) => err.name === 'AbortError');
    assert.deepEqual(await liveMarkers(containerId, /^sleep 1237/), []);

    await assert.rejects(
      sandbox.exec(containerId, { command: 'true', timeoutMs: 1000, signal: controller.signal }),
      (err: Error) => err.name === 'AbortError',
      'an already-aborted signal never starts the exec',
    );
  });

  test('exec output is capped at 1 MiB per stream, keeping the tail', async () => {
    const { containerId } = await startContainer();
    const r = await sandbox.exec(containerId, {
      command: "head -c 3000000 /dev/zero | tr '\\0' a; echo END; echo small >&2",
      timeoutMs: 30_000,
    });
    assert.equal(r.exitCode, 0);
    assert.match(r.stdout, /^\[truncated: first \d+ bytes dropped\]\n/);
    assert.ok(r.stdout.endsWith('aaaaEND\n'));
    const body = r.stdout.slice(r.stdout.indexOf('\n') + 1);
    assert.equal(Buffer.byteLength(body), EXEC_OUTPUT_CAP_BYTES);
    assert.equal(r.stderr, 'small\n');
  });

  test('execUntilAgentReady retries "connection refused" until the agent answers', async () => {
    const { containerId } = await startContainer();
    const startup = { timeoutSeconds: 30, pollIntervalSeconds: 0.1 };
    const retries: Array<[number, number]> = [];
    const r = await sandbox.execUntilAgentReady(
      { containerId, startup },
      {
        command: `n=$(cat /tmp/attempts 2>/dev/null || echo 0); n=$((n + 1)); echo $n > /tmp/attempts
if [ $n -lt 3 ]; then echo "curl: (7) Failed to connect to localhost port 8080: Connection refused" >&2; exit 7; fi
echo ready`,
        timeoutMs: 10_000,
        onRetry: (attempt, retryInMs) => retries.push([attempt, retryInMs]),
      },
    );
    assert.deepEqual(
      { attempts: r.attempts, exitCode: r.exitCode, stdout: r.stdout },
      { attempts: 3, exitCode: 0, stdout: 'ready\n' },
    );
    assert.deepEqual(retries, [
      [1, 100],
      [2, 100],
    ]);

    const otherFailure = await sandbox.execUntilAgentReady(
      { containerId, startup },
      { command: 'echo boom >&2; exit 1', timeoutMs: 10_000 },
    );
    assert.deepEqual(
      { attempts: otherFailure.attempts, exitCode: otherFailure.exitCode },
      { attempts: 1, exitCode: 1 },
    );

    const windowStart = Date.now();
    const neverReady = await sandbox.execUntilAgentReady(
      { containerId, startup: { timeoutSeconds: 0.5, pollIntervalSeconds: 0.1 } },
      { command: 'echo "connect: Connection refused"; exit 1', timeoutMs: 10_000 },
    );
    assert.equal(neverReady.exitCode, 1);
    assert.ok(neverReady.attempts >= 2, `attempts=${neverReady.attempts}`);
    assert.ok(Date.now() - windowStart < 5000, 'gives up once the startup window has elapsed');
  });

  test('a start command that exits at once fails with E_CONTAINER_STARTUP_TIMEOUT, with its exit code and logs', async () => {
    const spec = baseSpec(runId, {
      startCommand: 'echo bye-from-start; exit 3',
      startup: { timeoutSeconds: 5, pollIntervalSeconds: 0.1 },
    });
    // Either the start is seen failing, or it read as running for an instant and the exec finds it stopped.
    const run = async () => {
      const { containerId } = await sandbox.createAndStart(spec);
      try {
        await sandbox.exec(containerId, { command: 'echo hi', timeoutMs: 5000 });
      } finally {
        await sandbox.remove(containerId);
      }
    };
    await assert.rejects(run(), (err: unknown) => {
      assert.ok(err instanceof DockerInfraError);
      assert.equal(err.code, 'E_CONTAINER_STARTUP_TIMEOUT');
      assert.match(err.message, /^E_CONTAINER_STARTUP_TIMEOUT: container=/);
      assert.match(err.message, /exited with code 3/);
      assert.match(err.message, /bye-from-start/);
      return true;
    });
    assert.equal(await sandbox.inspectState(spec.name), null, 'the failed container was removed');
  });

  test('create failures are E_DOCKER_CREATE; invalid specs are rejected before touching Docker', async () => {
    await assert.rejects(
      startContainer({ image: `bench/does-not-exist-${runId}:nope` }),
      (err: unknown) =>
        err instanceof DockerInfraError &&
        err.code === 'E_DOCKER_CREATE' &&
        /^E_DOCKER_CREATE: /.test(err.message),
    );
    await assert.rejects(
      startContainer({ files: [{ path: '/var/run/docker.sock', content: 'x' }] }),
      (err: unknown) => err instanceof SandboxSpecError && /Docker socket/.test(err.message),
    );
    await assert.rejects(startContainer({ name: '-bad name' }), SandboxSpecError);
  });

  test('hardening is visible in docker inspect and inside the container', async () => {
    const { containerId } = await startContainer({ limits: { memoryMb: 96, cpus: 0.5, pidsLimit: 50 } });
    const { HostConfig: hc, Mounts: mounts } = cliInspect(containerId);
    assert.deepEqual(hc.CapDrop, ['ALL']);
    assert.deepEqual(hc.SecurityOpt, ['no-new-privileges:true']);
    assert.equal(hc.Memory, 96 * 1024 * 1024);
    assert.equal(hc.NanoCpus, 500_000_000);
    assert.equal(hc.PidsLimit, 50);
    assert.equal(hc.Privileged, false);
    assert.equal(hc.AutoRemove, false);
    assert.deepEqual(hc.ExtraHosts, ['host.docker.internal:host-gateway']);
    assert.ok(!hc.Binds, 'no binds');
    assert.ok(
      !mounts.some((m) => /docker\.sock/.test(`${m.Source} ${m.Destination}`)),
      'no docker.sock mount',
    );

    const status = await sandbox.exec(containerId, {
      command: 'grep -E "^(NoNewPrivs|CapEff)" /proc/self/status',
      timeoutMs: 10_000,
    });
    assert.match(status.stdout, /^NoNewPrivs:\s+1$/m);
    assert.match(status.stdout, /^CapEff:\s+0+$/m, 'root in the container has no capabilities');

    const socket = await sandbox.exec(containerId, {
      command: 'test -e /var/run/docker.sock',
      timeoutMs: 10_000,
    });
    assert.notEqual(socket.exitCode, 0, 'the docker socket is not reachable inside');
  });

  test('the configured OCI runtime is the one the container runs with; an unregistered one is E_DOCKER_CREATE', async () => {
    // runc is always registered; crun only where scripts/setup could register and use it.
    const withRunc = new DockerSandbox(docker, new Semaphore(4), log, { runtime: 'runc' });
    const { containerId } = await withRunc.createAndStart(baseSpec(runId));
    assert.equal(cliInspect(containerId).HostConfig.Runtime, 'runc');
    const r = await withRunc.exec(containerId, { command: 'echo ok', timeoutMs: 10_000 });
    assert.equal(r.stdout.trim(), 'ok');

    const unknown = new DockerSandbox(docker, new Semaphore(4), log, { runtime: `nope-${runId}` });
    await assert.rejects(
      unknown.createAndStart(baseSpec(runId)),
      (err: unknown) =>
        err instanceof DockerInfraError && err.code === 'E_DOCKER_CREATE' && /runtime/i.test(err.message),
    );
  });

  test('hardening switched off leaves capabilities and privilege escalation to the image defaults', async () => {
    const { containerId } = await startContainer({
      hardening: { noNewPrivileges: false, dropAllCapabilities: false },
    });
    const { HostConfig: hc } = cliInspect(containerId);
    assert.ok(!hc.CapDrop);
    assert.ok(!hc.SecurityOpt);
  });

  test('a container above its memory limit is reported as E_CONTAINER_OOM_KILLED', async () => {
    const { containerId } = await startContainer({
      image: AGENT_BASE,
      limits: { memoryMb: 32, cpus: 1, pidsLimit: 64 },
    });
    await assert.rejects(
      sandbox.exec(containerId, {
        command: 'python3 -c "x = bytearray(256 * 1024 * 1024)"',
        timeoutMs: 30_000,
      }),
      (err: unknown) => err instanceof DockerInfraError && err.code === 'E_CONTAINER_OOM_KILLED',
    );
    const sigkill = await sandbox.exec(containerId, { command: 'kill -9 $$', timeoutMs: 10_000 });
    assert.equal(sigkill.exitCode, 137, 'a plain SIGKILL without OOM is just an exit code');
  });

  test('a same-named leftover container is removed before create (pre-clean)', async () => {
    const spec = baseSpec(runId);
    execFileSync(
      'docker',
      ['create', '--name', spec.name, '--label', `${TEST_RUN_LABEL}=${runId}`, BUSYBOX, 'sleep', '1'],
      {
        stdio: 'ignore',
      },
    );
    const { containerId } = await sandbox.createAndStart(spec);
    assert.equal((await sandbox.inspectState(containerId))?.running, true);
  });

  test('logs returns the demultiplexed tail of stdout+stderr; read failures become text', async () => {
    const { containerId } = await startContainer({
      startCommand:
        'echo first-line; echo to-stderr >&2; i=0; while [ $i -lt 50 ]; do echo line$i; i=$((i + 1)); done; sleep infinity',
    });
    await waitFor(
      async () => {
        const logs = await sandbox.logs(containerId, 100_000);
        return logs.includes('line49\n') && logs.includes('to-stderr\n');
      },
      5000,
      'container output',
    );
    const all = await sandbox.logs(containerId, 100_000);
    // stdout and stderr are separate pipes: only the order within each stream is guaranteed.
    assert.equal(all.match(/to-stderr\n/g)?.length, 1);
    const stdoutOnly = all.replace('to-stderr\n', '');
    assert.match(stdoutOnly, /^first-line\nline0\nline1\n/);
    assert.ok(stdoutOnly.endsWith('line48\nline49\n'));
    assert.equal(await sandbox.logs(containerId, 14), all.slice(-14));

    const missing = await sandbox.logs('agentbench-no-such-container', 100);
    assert.match(missing, /^E_DOCKER_LOGS_READ: .*no such container/i);
  });

  test('inspectState, remove and listManagedContainers', async () => {
    const workflowId = `wf-${runId}`;
    const { containerId, name } = await startContainer({
      labels: { [TEST_RUN_LABEL]: runId, [LABELS.workflowId]: workflowId, [LABELS.runCaseId]: '901' },
    });
    await startContainer({
      labels: { [TEST_RUN_LABEL]: runId, [LABELS.workflowId]: workflowId, [LABELS.runCaseId]: '902' },
    });

    assert.deepEqual(await sandbox.inspectState(containerId), {
      running: true,
      exitCode: null,
      oomKilled: false,
    });
    const forCase = await sandbox.listManagedContainers({ workflowId, runCaseId: 901 });
    assert.deepEqual(
      forCase.map((c) => ({ id: c.id, name: c.name, state: c.state })),
      [{ id: containerId, name, state: 'running' }],
    );
    assert.ok(forCase[0] && Math.abs(forCase[0].createdAt.getTime() - Date.now()) < 60_000);
    assert.equal((await sandbox.listManagedContainers({ workflowId })).length, 2);

    execFileSync('docker', ['kill', containerId], { stdio: 'ignore' });
    await waitFor(
      async () => (await sandbox.inspectState(containerId))?.running === false,
      5000,
      'container stop',
    );
    assert.deepEqual(await sandbox.inspectState(containerId), {
      running: false,
      exitCode: 137,
      oomKilled: false,
    });
    assert.equal((await sandbox.listManagedContainers({ workflowId, runCaseId: 901 }))[0]?.state, 'exited');

    await sandbox.remove(containerId);
    await sandbox.remove(containerId); // already gone: still fine
    assert.equal(await sandbox.inspectState(containerId), null);
    assert.equal((await sandbox.listManagedContainers({ workflowId })).length, 1);
  });

  test('create, start and remove are limited by the ops semaphore', async () => {
    const ops = new Semaphore(2);
    let inFlight = 0;
    let peak = 0;
    const counted = createDockerClient(SOCKET_PATH);
    const track =
      <A extends unknown[], R>(fn: (...args: A) => Promise<R>) =>
      async (...args: A): Promise<R> => {
        peak = Math.max(peak, ++inFlight);
        try {
          return await fn(...args);
        } finally {
          inFlight--;
        }
      };
    const originalCreate = counted.createContainer.bind(counted);
    counted.createContainer = track(originalCreate) as Dockerode['createContainer'];
    const limited = new DockerSandbox(counted, ops, log);

    const started = await Promise.all(
      Array.from({ length: 5 }, () => limited.createAndStart(baseSpec(runId))),
    );
    assert.equal(started.length, 5);
    assert.ok(peak >= 1 && peak <= 2, `peak concurrent creates ${peak}`);
    await Promise.all(started.map((c) => limited.remove(c.containerId)));
    assert.equal(ops.inUse, 0);
    assert.equal(ops.waiting, 0);
  });

  test("a case command stopped by another worker's removal is told apart from the agent's own SIGTERM exit", async () => {
    // Another worker (a retry, the reaper) removing the container gracefully: SIGTERM first (143).
    const other = new DockerSandbox(docker, new Semaphore(4), log, { stopGraceMs: 1_000 });
    const removed = await startContainer();
    const running = sandbox.exec(removed.containerId, { command: 'sleep 60', timeoutMs: 90_000 });
    await waitFor(
      async () => (await liveMarkers(removed.containerId, /^sleep 60/)).length === 1,
      20_000,
      'the case command running',
    );
    const removal = other.remove(removed.containerId);
    const stopped = await running;
    assert.ok(stopped.exitCode > 128, `killed by a signal: ${stopped.exitCode}`);
    assert.equal(await sandbox.stoppedFromOutside(removed.containerId), true);
    await removal;

    // The agent ending itself by SIGTERM, its container left running: its own exit, a result.
    const own = await startContainer();
    const self = await sandbox.exec(own.containerId, { command: 'kill -TERM $$', timeoutMs: 10_000 });
    assert.equal(self.exitCode, 143);
    assert.equal(await sandbox.stoppedFromOutside(own.containerId), false);
    await sandbox.remove(own.containerId);
  });

  test('the graceful stop at removal: no exec for an idle start command running alone, a process the case left behind still gets it', async () => {
    const client = createDockerClient(SOCKET_PATH);
    const calls = countDockerCalls(client);
    const graceful = new DockerSandbox(client, new Semaphore(4), log, { stopGraceMs: 2_000 });
    const execs = () => calls.snapshot().get('POST /containers/:id/exec') ?? 0;

    const alone = await graceful.createAndStart(baseSpec(runId));
    calls.reset();
    await graceful.remove(alone.containerId);
    assert.equal(execs(), 0, [...calls.snapshot()].join(', '));
    assert.equal(calls.snapshot().get('GET /containers/:id/top'), 1);
    assert.equal((await graceful.inspectState(alone.containerId)) === null, true);

    // The case command left a server running: it gets its SIGTERM (and exits on it, well within the grace).
    const leftBehind = await graceful.createAndStart(baseSpec(runId));
    const started = await graceful.exec(leftBehind.containerId, {
      command: `sh -c 'trap "exit 0" TERM; while :; do sleep 0.05; done' >/dev/null 2>&1 &`,
      timeoutMs: 10_000,
    });
    assert.equal(started.exitCode, 0, started.stderr);
    calls.reset();
    const removeStart = Date.now();
    await graceful.remove(leftBehind.containerId);
    assert.equal(execs(), 1, [...calls.snapshot()].join(', '));
    assert.ok(Date.now() - removeStart < 2_000 + 5_000, 'the left-behind process ended on SIGTERM');
    assert.equal((await graceful.inspectState(leftBehind.containerId)) === null, true);

    // A start command that is not idle is stopped gracefully without asking.
    const server = await graceful.createAndStart(
      baseSpec(runId, { startCommand: `trap "exit 0" TERM; while :; do sleep 0.05; done` }),
    );
    calls.reset();
    await graceful.remove(server.containerId);
    assert.equal(calls.snapshot().get('GET /containers/:id/top') ?? 0, 0);
    assert.equal(execs(), 1);
  });
});
