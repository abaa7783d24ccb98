import { createDockerClient, pingDocker } from '../../docker/docker-client';
import type { Config } from '../../config';
import { connectTemporalClient } from '../../temporal/connection';
import { DevServerError, ensureTemporalDevServer, isLoopbackAddress } from '../../temporal/dev-server';
import { startOrchestratorTracing } from '../../tracing/orchestrator-tracing';
import { dispatchExperimentFile } from '../../local-run/platform-dispatch';
import { ExperimentFileError, readExperimentFile } from '../../local-run/experiment-file';
import { CliError, loadConfigOrExit, openDatabase, processLogger } from '../process-context';
import { superviseRun, type SuperviseDeps } from '../run-supervisor';

export interface RunOptions {
  worker: boolean;
  /** Write the HTML report of the experiment at the end (default: yes). */
  report?: boolean;
  concurrency?: number;
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

/** Connections `run` and `rerun` need; the caller closes them with `close()`. */
export async function openRunDeps(opts: { worker: boolean }): Promise<SuperviseDeps & { close(): Promise<void> }> {
  const config = loadConfigOrExit();
  // The progress bar and table own stdout; the JSON log stays at warn and above.
  const log = processLogger({ ...config, logLevel: config.logLevel === 'info' ? 'warn' : config.logLevel }, 'run');
  const docker = createDockerClient(config.docker.socketPath);
  if (opts.worker && !(await pingDocker(docker, 5000))) {
    throw new CliError(`Docker does not answer at ${config.docker.socketPath} (run: npm run setup)`);
  }
  await ensureLocalTemporal(config);
  const pool = await openDatabase(config, log, { localDefault: true });
  // Null unless ORCHESTRATOR_OTLP_ENDPOINT is set; the client and the in-process worker share it.
  const tracing = startOrchestratorTracing(config, { service: 'agentbench-run', log });
  const client = await connectTemporalClient(config, { tracing }).catch(async (err: unknown) => {
    await pool.end();
    await tracing?.shutdown();
    const hint = isLoopbackAddress(config.temporal.address) ? 'run: npm run setup' : 'a dev server is started automatically only for 127.0.0.1 or localhost';
    throw new CliError(`Temporal does not answer at ${config.temporal.address}: ${String(err)} (${hint})`);
  });
  return {
    config,
    log,
    pool,
    client,
    docker,
    tracing,
    async close() {
      await client.connection.close();
      await pool.end();
      await tracing?.shutdown();
    },
  };
}

/**
 * `benchctl run <file>`: the same workflow the bridge starts, without RabbitMQ. Creates the rows
 * the platform would, then runs and follows the experiment.
 */
export async function runCommand(file: string, opts: RunOptions): Promise<void> {
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
    await superviseRun(deps, message, { worker: opts.worker, report: opts.report !== false, overrides: opts.concurrency ? { concurrentCases: opts.concurrency } : {} });
  } finally {
    await deps.close();
  }
}
