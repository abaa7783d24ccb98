import cliProgress from 'cli-progress';
import type { Client } from '@temporalio/client';
import type Dockerode from 'dockerode';
import type pg from 'pg';
import type { Config } from '../config';
import type { Logger } from '../logger';
import type { ExperimentRunRequested } from '../domain/message';
import { finishedCount, type ExperimentRunResult, type RunProgress, type RunSettings } from '../domain/experiment-run';
import { temporalUiLink } from '../temporal/connection';
import { createCaseWorker } from '../temporal/case-worker';
import type { OrchestratorTracing } from '../tracing/orchestrator-tracing';
import { startExperimentRun } from '../temporal/run-starter';
import { printCaseTable } from './case-table';
import { writeExperimentReport } from './report-writer';

export interface SuperviseDeps {
  config: Config;
  log: Logger;
  pool: pg.Pool;
  client: Client;
  docker: Dockerode;
  /** Orchestrator traces of this process (ORCHESTRATOR_OTLP_ENDPOINT), for the in-process worker. */
  tracing?: OrchestratorTracing | null;
}

/**
 * Starts the run of a message and follows it to the end on the terminal: served by an in-process
 * worker unless `worker` is false, a live progress bar, then the case table and the UI link.
 * Sets a non-zero exit code unless every case succeeded.
 */
export async function superviseRun(
  deps: SuperviseDeps,
  message: ExperimentRunRequested,
  opts: { worker: boolean; report?: boolean; overrides?: Partial<RunSettings> },
): Promise<ExperimentRunResult> {
  const { config, log, pool, client, docker } = deps;
  const { workflowId } = await startExperimentRun({ client, pool, config, log }, message, message.message_id, opts.overrides);
  const link = temporalUiLink(config, workflowId);
  process.stdout.write(`experiment ${message.experiment.id}: ${message.run_cases.length} cases, workflow ${workflowId}\n${link}\n`);

  const handle = client.workflow.getHandle(workflowId);
  const watch = watchProgress(() => handle.query<RunProgress>('progress'), message.run_cases.length);
  let result: ExperimentRunResult;
  if (opts.worker) {
    const worker = await createCaseWorker({ config, log, pool, docker, client, tracing: deps.tracing });
    result = await worker.runUntil(handle.result() as Promise<ExperimentRunResult>);
  } else {
    result = (await handle.result()) as ExperimentRunResult;
  }
  watch.stop(result.progress);

  await printCaseTable(pool, message.experiment.id);
  const p = result.progress;
  process.stdout.write(
    `\n${result.outcome}${result.detail ? ` (${result.detail})` : ''}: ${p.success} success, ${p.failed} failed, ${p.timeout} timeout, ${p.canceled} canceled of ${p.total}\n` +
      `Temporal UI: ${link}\n`,
  );
  if (opts.report) {
    // The run's outcome stands whether or not its report could be written.
    await writeExperimentReport(pool, config, message.experiment.id).then(
      (file) => process.stdout.write(`Report: ${file}\n`),
      (err: unknown) => process.stderr.write(`benchctl: report not written: ${err instanceof Error ? err.message : String(err)}\n`),
    );
  }
  if (result.outcome !== 'completed' || p.success < p.total) process.exitCode = 1;
  return result;
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
    stop(final: RunProgress) {
      clearInterval(timer);
      show(final);
      bar?.stop();
    },
  };
}
