import { randomBytes } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import type Dockerode from 'dockerode';
import { loadConfig, type Config } from '../../src/config';
import { createLogger, type Logger } from '../../src/logger';
import { createDockerClient } from '../../src/docker/docker-client';
import { LABELS } from '../../src/docker/labels';
import { connectTemporalClient } from '../../src/temporal/connection';
import { createCaseWorker, type CaseWorker } from '../../src/temporal/case-worker';
import { createTestDatabase, type TestDatabase } from './database';

/** Environment of the local services that scripts/setup starts. */
export function localTestEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    RABBITMQ_HOST: '127.0.0.1',
    RABBITMQ_USER: 'guest',
    RABBITMQ_PASSWORD: 'guest',
    REDIS_HOST: '127.0.0.1',
    TEMPORAL_ADDRESS: process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    SANDBOX_REAPER_MIN_AGE_SECONDS: '3600',
    // Ephemeral: tests never collide with a worker (or each other) on the default 14318.
    OTEL_COLLECTOR_PORT: '0',
    ...extra,
  };
}

/** A logger whose JSON lines tests can assert on (with the production redaction rules). */
export function captureLogger(level = 'debug'): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const destination = {
    write(chunk: string) {
      for (const line of chunk.split('\n'))
        if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
    },
  };
  return { log: createLogger({ level, destination }), lines };
}

export interface Stack {
  config: Config;
  db: TestDatabase;
  client: Client;
  docker: Dockerode;
  /** null when started with `worker: false` (the test runs workers as child processes). */
  worker: CaseWorker | null;
  taskQueue: string;
  /** The env a `benchctl` child process needs to join this stack. */
  env: Record<string, string>;
  stop(): Promise<void>;
}

/**
 * Fresh database, a worker on its own task queue (so concurrent test files never steal each
 * other's tasks) against the real Temporal dev server and Docker engine.
 */
export async function startStack(
  opts: {
    env?: Record<string, string>;
    log?: Logger;
    worker?: boolean;
    /** A private Postgres server's admin URL (test/support/private-postgres.ts); default the shared one. */
    databaseAdminUrl?: string;
  } = {},
): Promise<Stack> {
  const taskQueue = `agentbench-test-${randomBytes(4).toString('hex')}`;
  const db = await createTestDatabase({ adminUrl: opts.databaseAdminUrl });
  const env = localTestEnv({ DATABASE_URL: db.url, TEMPORAL_TASK_QUEUE: taskQueue, ...opts.env });
  const config = loadConfig(env);
  const log = opts.log ?? createLogger({ level: config.logLevel });
  const client = await connectTemporalClient(config);
  const docker = createDockerClient(config.docker.socketPath);
  const worker =
    opts.worker === false
      ? null
      : await createCaseWorker({ config, log, pool: db.pool, docker, client, taskQueue });
  const running = worker?.run();
  return {
    config,
    db,
    client,
    docker,
    worker,
    taskQueue,
    env,
    async stop() {
      await worker?.shutdown();
      await running;
      await client.connection.close();
      await db.drop();
    },
  };
}

/** Containers of ours (by label) that belong to the given workflow ids — should be none after a run. */
export async function managedContainers(docker: Dockerode, workflowIds: string[]): Promise<string[]> {
  const all = await docker.listContainers({ all: true, filters: { label: [`${LABELS.managed}=true`] } });
  return all.filter((c) => workflowIds.includes(c.Labels[LABELS.workflowId] ?? '')).map((c) => c.Id);
}

/** Polls fn until it returns a non-undefined value or the deadline passes. */
export async function eventually<T>(
  fn: () => Promise<T | undefined>,
  timeoutMs = 60_000,
  what = 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A `benchctl worker` child process, so a test can kill it with SIGKILL mid-case. */
export function spawnWorker(env: Record<string, string>): {
  child: ChildProcess;
  exited: Promise<number | null>;
  output: () => string;
} {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.resolve(__dirname, '../../src/cli/benchctl.ts'), 'worker'],
    {
      // No metrics endpoint unless a test asks for one: the default port may be held by another
      // worker on this host, and a worker that cannot bind it exits at once.
      env: { ...process.env, METRICS_PORT: '0', ...env, LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, exited, output: () => out };
}
