import path from 'node:path';
import { createDockerClient, pingDocker } from '../../docker/docker-client';
import type { Config } from '../../config';
import { connectTemporalClient } from '../../temporal/connection';
import { ensureTemporalDevServer, isLoopbackAddress } from '../../temporal/dev-server';
import { DevServerError } from '../../temporal/errors';
import { startOrchestratorTracing } from '../../tracing/orchestrator-tracing';
import { dispatchExperimentFile } from '../../local-run/platform-dispatch';
import { ExperimentFileError, readExperimentFile } from '../../local-run/experiment-file';
import pino from 'pino';
import { createLogger } from '../../logger';
import { errorText } from '../../domain/errors';
import { createCaseWorker, type CaseWorker } from '../../temporal/case-worker';
import { requireQueuePoller } from '../queue-pollers';
import { CliError, loadConfigOrExit, openDatabase } from '../process-context';
import { superviseRun, type SuperviseDeps } from '../run-supervisor';
import { isTaskBatchFile, runBatchCommand, type BatchOptions } from './run-batch';

export interface RunOptions {
  worker: boolean;
  /** Write the HTML report of the experiment at the end (default: yes). */
  report?: boolean;
  concurrency?: number;
  /** One JSON object on stdout at the end instead of the bar and the table. */
  json?: boolean;
}

/**
 * ARCHITECTURE §6: a local run needs only Docker, so a loopback Temporal that does not answer is
 * started (the same dev server scripts/setup starts) and left running for the next run and the UI
 * link. A remote address is never started, only connected to.
 */
async function ensureLocalTemporal(config: Config): Promise<void> {
  if (!isLoopbackAddress(config.temporal.address)) return;
  try {
    await ensureTemporalDevServer({
      address: config.temporal.address,
      namespace: config.temporal.namespace,
      stateDir: config.stateDir,
      // stdout belongs to the progress bar and the table.
      say: (line) => process.stderr.write(`benchctl: ${line}\n`),
    });
  } catch (err) {
    if (err instanceof DevServerError) throw new CliError(err.message);
    throw err;
  }
}

/**
 * The in-process worker's collector port: a free one unless OTEL_COLLECTOR_PORT says otherwise. The
 * default (14318) is meant for a long-running `benchctl worker`, which may hold it on this host.
 */
function inProcessWorkerConfig(config: Config, env: NodeJS.ProcessEnv = process.env): Config {
  if ((env.OTEL_COLLECTOR_PORT ?? '').trim() !== '') return config;
  return { ...config, otel: { ...config.otel, collectorPort: 0 } };
}

/** What an in-process worker failed to get, in one line (EADDRINUSE and friends carry no stack here). */
function workerStartError(config: Config, err: unknown): CliError {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  if (code === 'EADDRINUSE' || code === 'EACCES') {
    return new CliError(
      `cannot listen on the OTel collector port ${config.otel.collectorPort} (${code}): another worker may hold it; ` +
        'unset OTEL_COLLECTOR_PORT (a free port is taken) or use --no-worker. Nothing was started',
    );
  }
  return new CliError(`the in-process worker cannot start: ${errorText(err)}. Nothing was started`);
}

/**
 * stdout belongs to the progress bar and the table, so the JSON log (warn and above unless LOG_LEVEL
 * says more) never goes there: to a per-run file while a bar is drawn on a terminal (a line on the
 * same terminal would tear the bar), to stderr otherwise.
 */
function runLogger(config: Config) {
  const level = config.logLevel === 'info' ? 'warn' : config.logLevel;
  if (!process.stdout.isTTY)
    return createLogger({ level, name: 'run', destination: pino.destination({ fd: 2, sync: true }) });
  const file = path.join(
    config.stateDir,
    'logs',
    `run-${new Date().toISOString().replace(/[:.]/g, '-')}-${process.pid}.log`,
  );
  process.stderr.write(`benchctl: log: ${file}\n`);
  return createLogger({
    level,
    name: 'run',
    destination: pino.destination({ dest: file, mkdir: true, sync: true }),
  });
}

/**
 * Connections `run` and `rerun` need, and the in-process worker (created, not yet polling): every
 * service and port is checked here, before the caller stores or starts anything. The caller closes
 * them with `close()`.
 */
export async function openRunDeps(opts: {
  worker: boolean;
}): Promise<SuperviseDeps & { close(): Promise<void> }> {
  const config = inProcessWorkerConfig(loadConfigOrExit());
  const log = runLogger(config);
  const docker = createDockerClient(config.docker.socketPath);
  if (opts.worker && !(await pingDocker(docker, 5000))) {
    throw new CliError(`Docker does not answer at ${config.docker.socketPath} (run: npm run setup)`);
  }
  await ensureLocalTemporal(config);
  const pool = await openDatabase(config, log, { localDefault: true });
  // Null unless ORCHESTRATOR_OTLP_ENDPOINT is set; the client and the in-process worker share it.
  const tracing = startOrchestratorTracing(config, { service: 'agentbench-run', log });
  const closeBase = async () => {
    await pool.end();
    await tracing?.shutdown();
  };
  const client = await connectTemporalClient(config, { tracing }).catch(async (err: unknown) => {
    await closeBase();
    const hint = isLoopbackAddress(config.temporal.address)
      ? 'run: npm run setup'
      : 'a dev server is started automatically only for 127.0.0.1 or localhost';
    throw new CliError(`Temporal does not answer at ${config.temporal.address}: ${String(err)} (${hint})`);
  });
  let worker: CaseWorker | null = null;
  try {
    if (opts.worker) {
      worker = await createCaseWorker({ config, log, pool, docker, client, tracing }).catch(
        (err: unknown) => {
          throw workerStartError(config, err);
        },
      );
    } else {
      await requireQueuePoller(client, config);
    }
  } catch (err) {
    await client.connection.close();
    await closeBase();
    throw err;
  }
  return {
    config,
    log,
    pool,
    client,
    docker,
    tracing,
    worker,
    async close() {
      await worker?.close();
      await client.connection.close();
      await closeBase();
    },
  };
}

/**
 * `benchctl run <file>`: the same workflow the bridge starts, without RabbitMQ. Creates the rows
 * the platform would, then runs and follows the experiment. A `.jsonl` file (or `--tasks`) is a
 * batch of tasks for the built-in runtimes (run-batch.ts).
 */
export async function runCommand(file: string, opts: BatchOptions & { tasks?: boolean }): Promise<void> {
  if (isTaskBatchFile(file, opts)) return runBatchCommand(file, opts);
  let experiment;
  try {
    experiment = await readExperimentFile(file);
  } catch (err) {
    if (err instanceof ExperimentFileError) throw new CliError(err.message, 2);
    throw err;
  }
  const deps = await openRunDeps(opts);
  try {
    const message = await dispatchExperimentFile(deps.pool, experiment);
    await superviseRun(deps, message, {
      json: opts.json === true,
      report: opts.report !== false,
      overrides: opts.concurrency ? { concurrentCases: opts.concurrency } : {},
    });
  } finally {
    await deps.close();
  }
}
