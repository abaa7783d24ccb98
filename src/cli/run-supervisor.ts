import cliProgress from 'cli-progress';
import { WorkflowFailedError, type Client } from '@temporalio/client';
import { CancelledFailure } from '@temporalio/common';
import { runCaseCounts } from '../db/run-view-repository';
import type Dockerode from 'dockerode';
import type pg from 'pg';
import type { Config } from '../config';
import type { Logger } from '../logger';
import type { ExperimentRunRequested } from '../domain/message';
import {
  finishedCount,
  type ExperimentRunResult,
  type RunProgress,
  type RunSettings,
} from '../domain/experiment-run';
import { temporalUiLink } from '../temporal/connection';
import type { CaseWorker } from '../temporal/case-worker';
import { requestRunCancel } from '../runs/run-control';
import { CliError } from './process-context';
import { onInterrupt } from './run-interrupt';
import type { OrchestratorTracing } from '../tracing/orchestrator-tracing';
import { startExperimentRun } from '../temporal/run-starter';
import { printCaseTable } from './case-table';
import { writeExperimentReport } from './report-writer';
import { errorText } from '../domain/errors';

export interface SuperviseDeps {
  config: Config;
  log: Logger;
  pool: pg.Pool;
  client: Client;
  docker: Dockerode;
  /** Orchestrator traces of this process (ORCHESTRATOR_OTLP_ENDPOINT), for the in-process worker. */
  tracing?: OrchestratorTracing | null;
  /** The in-process worker, created (ports taken) before anything was started; null with --no-worker. */
  worker: CaseWorker | null;
}

interface SuperviseOptions {
  report?: boolean;
  overrides?: Partial<RunSettings>;
  /** One JSON object on stdout at the end instead of the bar, the table and the links. */
  json?: boolean;
}

/**
 * Starts the run of a message and follows it to the end on the terminal: served by the in-process
 * worker unless there is none, a live progress bar, then the case table and the UI link. Sets a
 * non-zero exit code unless every case succeeded. Once the workflow is started, a failure here
 * cancels it (one line on stderr, no stack); Ctrl-C asks whether to cancel it (run-interrupt.ts).
 */
export async function superviseRun(
  deps: SuperviseDeps,
  message: ExperimentRunRequested,
  opts: SuperviseOptions,
): Promise<ExperimentRunResult> {
  const { config, log, pool, client, worker } = deps;
  const { workflowId } = await startExperimentRun(
    { client, pool, config, log },
    message,
    message.message_id,
    opts.overrides,
  );
  const link = temporalUiLink(config, workflowId);
  if (!opts.json)
    process.stdout.write(
      `experiment ${message.experiment.id}: ${message.run_cases.length} cases, workflow ${workflowId}\n${link}\n`,
    );

  const handle = client.workflow.getHandle(workflowId);
  const watch = opts.json
    ? null
    : watchProgress(() => handle.query<RunProgress>('progress'), message.run_cases.length);
  const interrupt = onInterrupt({
    workflowId,
    cancel: () => handle.cancel(),
    pause: () => watch?.pause(),
    inProcessWorker: worker !== null,
  });
  let result: ExperimentRunResult;
  try {
    // A run canceled by Ctrl-C, `benchctl cancel` or the UI closes as CANCELED (after its bookkeeping).
    const done = (handle.result() as Promise<ExperimentRunResult>).catch(async (err: unknown) => {
      if (!(err instanceof WorkflowFailedError && err.cause instanceof CancelledFailure)) throw err;
      return canceledResult(pool, workflowId);
    });
    result = worker ? await worker.runUntil(done) : await done;
  } catch (err) {
    watch?.pause();
    const canceled = await requestRunCancel(client, workflowId).catch(() => 'not_found' as const);
    throw new CliError(
      `run ${workflowId} failed after its start: ${errorText(err)}` +
        (canceled === 'requested'
          ? worker
            ? '; its cancellation is requested (the next worker on the queue finishes it)'
            : '; its cancellation is requested'
          : ''),
    );
  } finally {
    interrupt.dispose();
  }
  watch?.stop(result.progress);
  const p = result.progress;
  if (result.outcome !== 'completed' || p.success < p.total) process.exitCode = 1;
  if (interrupt.canceled()) process.exitCode = 130;

  let reportFile: string | null = null;
  if (opts.report) {
    // The run's outcome stands whether or not its report could be written.
    reportFile = await writeExperimentReport(pool, config, message.experiment.id).catch((err: unknown) => {
      process.stderr.write(`benchctl: report not written: ${errorText(err)}\n`);
      return null;
    });
  }
  if (opts.json) {
    process.stdout.write(
      `${JSON.stringify({
        experimentId: message.experiment.id,
        workflowId,
        outcome: result.outcome,
        detail: result.detail ?? null,
        progress: p,
        temporalUiUrl: link,
        report: reportFile,
      })}\n`,
    );
    return result;
  }
  await printCaseTable(pool, message.experiment.id);
  process.stdout.write(
    `\n${result.outcome}${result.detail ? ` (${result.detail})` : ''}: ${p.success} success, ${p.failed} failed, ${p.timeout} timeout, ${p.canceled} canceled of ${p.total}\n` +
      `Temporal UI: ${link}\n`,
  );
  if (reportFile) process.stdout.write(`Report: ${reportFile}\n`);
  return result;
}

/** What a run that closed as CANCELED did, from its cases in Postgres (the workflow returned nothing). */
async function canceledResult(pool: pg.Pool, workflowId: string): Promise<ExperimentRunResult> {
  const c = await runCaseCounts(pool, workflowId);
  const progress: RunProgress = {
    total: c.total,
    started: c.total - c.pending - c.queued,
    success: c.success,
    failed: c.failed,
    timeout: c.timeout,
    canceled: c.canceled,
    recentFailures: [],
  };
  return { outcome: 'canceled', progress };
}

/** A live bar on a terminal; one plain line per change otherwise (CI logs, pipes). */
function watchProgress(read: () => Promise<RunProgress>, total: number) {
  const tty = process.stdout.isTTY === true;
  const bar = tty
    ? new cliProgress.SingleBar(
        {
          format: 'cases [{bar}] {value}/{total} | ok {ok} failed {failed} | {duration_formatted}',
          hideCursor: true,
          // stdout with the table; log lines go elsewhere (run.ts), never between bar redraws.
          stream: process.stdout,
        },
        cliProgress.Presets.shades_classic,
      )
    : null;
  bar?.start(total, 0, { ok: 0, failed: 0 });
  let last = -1;
  const show = (p: RunProgress) => {
    const done = finishedCount(p);
    if (bar) bar.update(done, { ok: p.success, failed: p.failed + p.timeout + p.canceled });
    else if (done !== last)
      process.stdout.write(
        `progress: ${done}/${p.total} done (${p.success} ok, ${p.failed + p.timeout} failed)\n`,
      );
    last = done;
  };
  const timer = setInterval(() => {
    read().then(show, () => undefined);
  }, 500);
  let paused = false;
  return {
    /** Stops the bar so the terminal can be used (a prompt, an error line). */
    pause() {
      if (paused) return;
      paused = true;
      clearInterval(timer);
      bar?.stop();
    },
    stop(final: RunProgress) {
      clearInterval(timer);
      if (!paused) {
        show(final);
        bar?.stop();
      }
    },
  };
}
