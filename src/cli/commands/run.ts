import cliProgress from 'cli-progress';
import { createDockerClient, pingDocker } from '../../docker/docker-client';
import { connectTemporalClient, temporalUiLink } from '../../temporal/connection';
import { createCaseWorker } from '../../temporal/case-worker';
import { startExperimentRun } from '../../temporal/run-starter';
import { installTemporalLogging } from '../../temporal/runtime-logging';
import { finishedCount, type ExperimentRunResult, type RunProgress } from '../../domain/experiment-run';
import { dispatchExperimentFile } from '../../local-run/platform-dispatch';
import { ExperimentFileError, readExperimentFile } from '../../local-run/experiment-file';
import { CliError, loadConfigOrExit, openDatabase, processLogger } from '../process-context';
import { printCaseTable } from '../case-table';

export interface RunOptions {
  worker: boolean;
  concurrency?: number;
}

/**
 * `benchctl run <file>`: the same workflow the bridge starts, without RabbitMQ. Creates the rows
 * the platform would, starts the run, serves it with an in-process worker (unless --no-worker),
 * shows progress, then the per-case results and the Temporal UI link.
 */
export async function runCommand(file: string, opts: RunOptions): Promise<void> {
  const config = loadConfigOrExit();
  // Progress bar and table own the terminal; the JSON log goes to stderr at warn and above.
  const log = processLogger({ ...config, logLevel: config.logLevel === 'info' ? 'warn' : config.logLevel }, 'run');
  installTemporalLogging(log);
  let experiment;
  try {
    experiment = await readExperimentFile(file);
  } catch (err) {
    if (err instanceof ExperimentFileError) throw new CliError(err.message, 2);
    throw err;
  }
  const docker = createDockerClient(config.docker.socketPath);
  if (opts.worker && !(await pingDocker(docker, 5000))) {
    throw new CliError(`Docker does not answer at ${config.docker.socketPath} (run: npm run setup)`);
  }
  const pool = await openDatabase(config, log, { localDefault: true });
  const client = await connectTemporalClient(config).catch((err: unknown) => {
    throw new CliError(`Temporal does not answer at ${config.temporal.address}: ${String(err)} (run: npm run setup)`);
  });
  try {
    const message = await dispatchExperimentFile(pool, experiment);
    const overrides = opts.concurrency ? { concurrentCases: opts.concurrency } : {};
    const { workflowId } = await startExperimentRun({ client, pool, config, log }, message, message.message_id, overrides);
    const link = temporalUiLink(config, workflowId);
    process.stdout.write(`experiment ${message.experiment.id}: ${message.run_cases.length} cases, workflow ${workflowId}\n${link}\n`);

    const handle = client.workflow.getHandle(workflowId);
    const watch = watchProgress(() => handle.query<RunProgress>('progress'), message.run_cases.length);
    let result: ExperimentRunResult;
    if (opts.worker) {
      const worker = await createCaseWorker({ config, log, pool, docker, client });
      result = await worker.runUntil(handle.result() as Promise<ExperimentRunResult>);
    } else {
      result = (await handle.result()) as ExperimentRunResult;
    }
    await watch.stop(result.progress);

    await printCaseTable(pool, message.experiment.id);
    const p = result.progress;
    process.stdout.write(
      `\n${result.outcome}${result.detail ? ` (${result.detail})` : ''}: ${p.success} success, ${p.failed} failed, ${p.timeout} timeout, ${p.canceled} canceled of ${p.total}\n` +
        `Temporal UI: ${link}\n`,
    );
    if (result.outcome !== 'completed' || p.success < p.total) process.exitCode = 1;
  } finally {
    await client.connection.close();
    await pool.end();
  }
}

/** A live bar on a terminal; one plain line per change otherwise (CI logs, pipes). */
function watchProgress(read: () => Promise<RunProgress>, total: number) {
  const tty = process.stdout.isTTY === true;
  const bar = tty
    ? new cliProgress.SingleBar(
        { format: 'cases [{bar}] {value}/{total} | ok {ok} failed {failed} | {duration_formatted}', hideCursor: true },
        cliProgress.Presets.shades_classic,
      )
    : null;
  bar?.start(total, 0, { ok: 0, failed: 0 });
  let last = -1;
  const show = (p: RunProgress) => {
    const done = finishedCount(p);
    if (bar) bar.update(done, { ok: p.success, failed: p.failed + p.timeout + p.canceled });
    else if (done !== last) process.stdout.write(`progress: ${done}/${p.total} done (${p.success} ok, ${p.failed + p.timeout} failed)\n`);
    last = done;
  };
  const timer = setInterval(() => {
    read().then(show, () => undefined);
  }, 500);
  return {
    async stop(final: RunProgress) {
      clearInterval(timer);
      show(final);
      bar?.stop();
    },
  };
}
