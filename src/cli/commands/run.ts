import { createDockerClient, pingDocker } from '../../docker/docker-client';
import { connectTemporalClient } from '../../temporal/connection';
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

/** Connections `run` and `rerun` need; the caller closes them with `close()`. */
export async function openRunDeps(opts: { worker: boolean }): Promise<SuperviseDeps & { close(): Promise<void> }> {
  const config = loadConfigOrExit();
  // The progress bar and table own stdout; the JSON log stays at warn and above.
  const log = processLogger({ ...config, logLevel: config.logLevel === 'info' ? 'warn' : config.logLevel }, 'run');
  const docker = createDockerClient(config.docker.socketPath);
  if (opts.worker && !(await pingDocker(docker, 5000))) {
    throw new CliError(`Docker does not answer at ${config.docker.socketPath} (run: npm run setup)`);
  }
  const pool = await openDatabase(config, log, { localDefault: true });
  // Null unless ORCHESTRATOR_OTLP_ENDPOINT is set; the client and the in-process worker share it.
  const tracing = startOrchestratorTracing(config, { service: 'agentbench-run', log });
  const client = await connectTemporalClient(config, { tracing }).catch(async (err: unknown) => {
    await pool.end();
    await tracing?.shutdown();
    throw new CliError(`Temporal does not answer at ${config.temporal.address}: ${String(err)} (run: npm run setup)`);
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
