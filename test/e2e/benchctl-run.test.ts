import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { eventually, managedContainers, startStack, type Stack } from '../support/stack';

const BENCHCTL = path.resolve(__dirname, '../../src/cli/benchctl.ts');
const DEFAULT_COLLECTOR_PORT = 14318;

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `benchctl …` as a child with piped stdio (no TTY); `onStdout` sees stdout as it arrives. */
function benchctl(
  args: string[],
  env: Record<string, string | undefined>,
  onStdout?: (text: string, child: ReturnType<typeof spawn>) => void,
): Promise<Ran> {
  const child = spawn(process.execPath, ['--import', 'tsx', BENCHCTL, ...args], {
    env: env as NodeJS.ProcessEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
    onStdout?.(stdout, child);
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stdout, stderr })));
}

/** Holds a port as another worker would; an EADDRINUSE means someone on this host holds it already. */
async function holdPort(port: number): Promise<net.Server | null> {
  const server = net.createServer();
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      err.code === 'EADDRINUSE' ? resolve(null) : reject(err),
    );
    server.listen(port, '0.0.0.0', () => resolve(server));
  });
}

function experimentFile(command: string, items = 2): object {
  return {
    name: 'benchctl run e2e',
    dataset: {
      name: 'benchctl run e2e',
      items: Array.from({ length: items }, (_, i) => ({ user_input: `item ${i}` })),
    },
    agent: {
      name: 'echo',
      agent_key: 'benchctl-run-e2e',
      runtime_spec_json: {
        agent_image: 'bench/busybox:latest',
        pull_policy: 'if-not-present',
        sandbox_start_command: 'sleep 3600',
        case_exec_command: command,
      },
    },
  };
}

async function experimentCount(stack: Stack): Promise<number> {
  const { rows } = await stack.db.pool.query<{ n: string }>('SELECT count(*) AS n FROM experiments');
  return Number(rows[0]?.n);
}

describe('benchctl run / status from the command line', () => {
  let stack: Stack;
  let dir: string;
  let okFile: string;
  let slowFile: string;
  let held: net.Server | null;
  let env: Record<string, string | undefined>;

  before(async () => {
    // No worker of the stack: the runs here are served by the CLI's in-process worker.
    stack = await startStack({ worker: false });
    dir = await mkdtemp(path.join(tmpdir(), 'benchctl-run-'));
    okFile = path.join(dir, 'ok.json');
    slowFile = path.join(dir, 'slow.json');
    await writeFile(okFile, JSON.stringify(experimentFile(`echo '{"output":"done"}'`)));
    await writeFile(slowFile, JSON.stringify(experimentFile('sleep 600', 1)));
    held = await holdPort(DEFAULT_COLLECTOR_PORT);
    // The CLI's defaults, as a user has them: no OTEL_COLLECTOR_PORT (the stack's env sets 0).
    env = { ...process.env, ...stack.env, OTEL_COLLECTOR_PORT: undefined, AGENTBENCH_STATE_DIR: dir };
  });
  after(async () => {
    await new Promise<void>((resolve) => (held ? held.close(() => resolve()) : resolve()));
    await stack?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('with port 14318 taken, `run` finishes normally; piped stdout has no ANSI escapes and no log lines', async () => {
    const r = await benchctl(['run', okFile, '--no-report'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /completed: 2 success, 0 failed, 0 timeout, 0 canceled of 2/);
    assert.ok(!r.stdout.includes('\u001b['), 'no ANSI escape sequences');
    for (const line of r.stdout.split('\n')) assert.doesNotMatch(line, /^\{"level"/);
  });

  test('`run --json` prints one JSON object; `status --json` shows the run and its cases', async () => {
    const r = await benchctl(['run', okFile, '--no-report', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim()) as {
      experimentId: number;
      workflowId: string;
      outcome: string;
      progress: { success: number; total: number };
    };
    assert.equal(out.outcome, 'completed');
    assert.deepEqual([out.progress.success, out.progress.total], [2, 2]);

    const s = await benchctl(['status', String(out.experimentId), '--json'], env);
    assert.equal(s.code, 0, s.stderr);
    const status = JSON.parse(s.stdout) as {
      runs: Array<{ workflowId: string; status: string; workflowStatus: string }>;
      cases: Array<{ status: string }>;
    };
    assert.deepEqual(
      status.runs.map((run) => [run.workflowId, run.workflowStatus]),
      [[out.workflowId, 'COMPLETED']],
    );
    assert.deepEqual(
      status.cases.map((c) => c.status),
      ['success', 'success'],
    );
  });

  test('an explicitly configured collector port that is taken stops `run` before anything is stored, in one line', async () => {
    if (!held) return; // someone else's process holds it: the same situation, but we cannot assert our own hold
    const before = await experimentCount(stack);
    const r = await benchctl(['run', okFile], {
      ...env,
      OTEL_COLLECTOR_PORT: String(DEFAULT_COLLECTOR_PORT),
    });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /OTel collector port 14318 \(EADDRINUSE\).*Nothing was started/);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
    assert.equal(await experimentCount(stack), before);
  });

  test('`run --no-worker` with nobody polling the queue says so at once and starts nothing', async () => {
    const before = await experimentCount(stack);
    const started = Date.now();
    // A queue of its own: the in-process workers of the other tests polled the stack's lately.
    const queue = `${stack.taskQueue}-nobody`;
    const r = await benchctl(['run', okFile, '--no-worker'], { ...env, TEMPORAL_TASK_QUEUE: queue });
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`no worker polls task queue ${queue}`));
    assert.ok(Date.now() - started < 60_000);
    assert.equal(await experimentCount(stack), before);
  });

  test('Ctrl-C on `run` without a terminal cancels the run: containers removed, case canceled', async () => {
    let interrupted = false;
    const r = await benchctl(['run', slowFile, '--no-report'], env, (stdout, child) => {
      // Interrupt once the case is in its container (a progress line follows the start).
      if (!interrupted && /workflow (experiment-\S+)/.test(stdout)) {
        const id = /workflow (experiment-\S+)/.exec(stdout)?.[1] as string;
        void eventually(
          async () => ((await managedContainers(stack.docker, [id])).length > 0 ? true : undefined),
          120_000,
          'the case container',
        ).then(() => child.kill('SIGINT'));
        interrupted = true;
      }
    });
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /canceling run experiment-/);
    assert.match(r.stdout, /canceled: 0 success, 0 failed, 0 timeout, 1 canceled of 1/);
    const workflowId = /workflow (experiment-\S+)/.exec(r.stdout)?.[1] as string;
    assert.deepEqual(await managedContainers(stack.docker, [workflowId]), []);
    const { status } = await stack.client.workflow.getHandle(workflowId).describe();
    assert.notEqual(status.name, 'RUNNING');
  });

  test('`status` of a missing experiment exits non-zero; `--version` prints the package version', async () => {
    const s = await benchctl(['status', '987654321'], env);
    assert.equal(s.code, 1);
    assert.match(s.stderr, /experiment 987654321 does not exist/);
    const v = await benchctl(['--version'], env);
    assert.equal(v.code, 0);
    const pkg = JSON.parse(await readFile(path.resolve(__dirname, '../../package.json'), 'utf8')) as {
      version: string;
    };
    assert.equal(v.stdout.trim(), pkg.version);
  });
});
