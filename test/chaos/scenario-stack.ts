import { randomBytes } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import path from 'node:path';
import type { Client, WorkflowHandle } from '@temporalio/client';
import Dockerode from 'dockerode';
import { loadConfig, type Config } from '../../src/config';
import { createLogger } from '../../src/logger';
import { parseExperimentMessage, type ExperimentRunRequested } from '../../src/domain/message';
import type { RunSettings } from '../../src/domain/experiment-run';
import { isTerminalStatus } from '../../src/domain/case-status';
import { connectTemporalClient } from '../../src/temporal/connection';
import { startExperimentRun } from '../../src/temporal/run-starter';
import {
  createTestDatabase,
  seedExperiment,
  type SeededExperiment,
  type TestDatabase,
} from '../support/database';
import { countedAgentCommand } from '../support/hit-counter';
import { buildPlatformMessage } from '../support/platform';
import { spawnWorker } from '../support/stack';
import { CHAOS_IMAGE, type ChaosServices } from './services';

export interface ChaosRun {
  seeded: SeededExperiment;
  message: ExperimentRunRequested;
  workflowId: string;
  handle: WorkflowHandle;
}

export interface SpawnedProcess {
  child: ChildProcess;
  exited: Promise<number | null>;
  output: () => string;
}

/**
 * One scenario's slice of the private services: its own database, task queue and RabbitMQ queue,
 * the env a `benchctl worker`/`bridge` child needs to join it, and the runs it started.
 */
export interface ScenarioStack {
  services: ChaosServices;
  db: TestDatabase;
  config: Config;
  client: Client;
  docker: Dockerode;
  taskQueue: string;
  queue: string;
  env: Record<string, string>;
  runs: ChaosRun[];
  /** Seeds `cases` cases and starts their run directly (as the bridge would), counting executions. */
  startRun(opts: { cases: number; sleepSeconds: number; settings?: Partial<RunSettings> }): Promise<ChaosRun>;
  /** Seeds rows and builds the platform's message for them, without starting anything. */
  seedMessage(
    cases: number,
    sleepSeconds: number,
  ): Promise<{ seeded: SeededExperiment; message: Record<string, unknown> }>;
  worker(extraEnv?: Record<string, string>): SpawnedProcess;
  bridge(extraEnv?: Record<string, string>): SpawnedProcess;
  /** Polls until every run's workflow is closed and every row terminal, or the deadline; true when ended. */
  waitForRunsToEnd(timeoutMs: number): Promise<boolean>;
  close(): Promise<void>;
}

const BENCHCTL = path.resolve(__dirname, '../../src/cli/benchctl.ts');

function spawnBridge(env: Record<string, string>): SpawnedProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', BENCHCTL, 'bridge'], {
    env: { ...process.env, METRICS_PORT: '0', ...env, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, exited, output: () => out };
}

export async function openScenarioStack(
  services: ChaosServices,
  opts: { env?: Record<string, string> } = {},
): Promise<ScenarioStack> {
  const tag = randomBytes(4).toString('hex');
  const taskQueue = `agentbench-chaos-${tag}`;
  const queue = `agentbench.chaos.${tag}`;
  const db = await createTestDatabase({ adminUrl: services.postgres.adminUrl });
  const env: Record<string, string> = {
    DATABASE_URL: db.url,
    TEMPORAL_ADDRESS: services.temporal.address,
    TEMPORAL_TASK_QUEUE: taskQueue,
    DOCKER_SOCKET_PATH: services.dockerd.socketPath,
    RABBITMQ_HOST: '127.0.0.1',
    RABBITMQ_PORT: String(services.rabbitmq.port),
    RABBITMQ_USER: 'guest',
    RABBITMQ_PASSWORD: 'guest',
    RABBITMQ_EXPERIMENT_QUEUE: queue,
    REDIS_HOST: '127.0.0.1',
    REDIS_PORT: String(services.redis.port),
    OTEL_COLLECTOR_PORT: '0',
    METRICS_PORT: '0',
    RESULT_EVENTS_ENABLED: 'false',
    CONSUMER_CONCURRENT_CASES: '4',
    LOG_LEVEL: 'silent',
    WORKFLOW_BUNDLE_PATH: services.workflowBundlePath,
    SANDBOX_CASE_FILES_DIR: services.caseFilesDir,
    ...opts.env,
  };
  const config = loadConfig(env);
  const client = await connectTemporalClient(config);
  const docker = new Dockerode({ socketPath: services.dockerd.socketPath });
  const log = createLogger({ level: 'silent' });
  const children: SpawnedProcess[] = [];
  const runs: ChaosRun[] = [];

  const seedMessage = async (cases: number, sleepSeconds: number) => {
    const seeded = await seedExperiment(db.pool, { cases, evaluators: 0 });
    const message = buildPlatformMessage(seeded, {
      queue,
      runtimeSpec: {
        agent_image: CHAOS_IMAGE,
        pull_policy: 'if-not-present',
        sandbox_start_command: 'sleep 3600',
        case_exec_command: countedAgentCommand(services.counter.port, sleepSeconds),
        // Cases are isolated on the network (SANDBOX_ISOLATE_CASES): the counter is opened to them.
        allow_host_ports: [services.counter.port],
      },
    });
    return { seeded, message };
  };

  const stack: ScenarioStack = {
    services,
    db,
    config,
    client,
    docker,
    taskQueue,
    queue,
    env,
    runs,
    seedMessage,
    async startRun({ cases, sleepSeconds, settings }) {
      const { seeded, message } = await seedMessage(cases, sleepSeconds);
      const parsed = parseExperimentMessage(JSON.stringify(message));
      if (!parsed.ok) throw new Error(`the chaos message does not parse: ${JSON.stringify(parsed)}`);
      await db.pool.query('UPDATE experiments SET queue_message_id = $2 WHERE id = $1', [
        seeded.experimentId,
        parsed.message.message_id,
      ]);
      const { workflowId } = await startExperimentRun(
        { client, pool: db.pool, config, log },
        parsed.message,
        parsed.message.message_id,
        settings,
      );
      const run = {
        seeded,
        message: parsed.message,
        workflowId,
        handle: client.workflow.getHandle(workflowId),
      };
      runs.push(run);
      return run;
    },
    worker(extraEnv = {}) {
      const w = spawnWorker({ ...env, ...extraEnv });
      children.push(w);
      return w;
    },
    bridge(extraEnv = {}) {
      const b = spawnBridge({ ...env, ...extraEnv });
      children.push(b);
      return b;
    },
    async waitForRunsToEnd(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const ended = await runsEnded(stack).catch(() => false);
        if (ended) return true;
        if (Date.now() > deadline) return false;
        await new Promise((r) => setTimeout(r, 500));
      }
    },
    async close() {
      for (const c of children) {
        if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
      }
      await Promise.all(children.map((c) => c.exited));
      await client.connection.close().catch(() => undefined);
      await db
        .drop()
        .catch((err: unknown) => console.error('chaos: could not drop the scenario database', err));
    },
  };
  return stack;
}

async function runsEnded(stack: ScenarioStack): Promise<boolean> {
  for (const run of stack.runs) {
    const d = await run.handle.describe();
    if (d.status.name === 'RUNNING') return false;
  }
  const ids = stack.runs.flatMap((r) => r.seeded.runCaseIds);
  const { rows } = await stack.db.pool.query<{ status: string }>(
    'SELECT status FROM run_cases WHERE id = ANY($1::bigint[])',
    [ids],
  );
  return rows.every((r) => isTerminalStatus(r.status));
}
