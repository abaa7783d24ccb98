import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseTaskLines } from '../../domain/batch-task';
import { workflowIdForRun } from '../../domain/experiment-run';
import { writeBatchOutput } from '../../batch/batch-output';
import { dispatchTaskBatch } from '../../local-run/batch-dispatch';
import { CliError } from '../process-context';
import { superviseRun } from '../run-supervisor';
import { openRunDeps, type RunOptions } from './run';

export interface BatchOptions extends RunOptions {
  /** Where trajectories/ and summary.json go (default ./output). */
  out?: string;
  /** false = `--no-cache`: every task runs; what it produces is still stored. */
  cache?: boolean;
  /** Skip invalid lines (each reported) instead of failing the batch. */
  skipInvalid?: boolean;
}

/** `benchctl run tasks.jsonl`, or any file with `--tasks`. */
export function isTaskBatchFile(file: string, opts: { tasks?: boolean }): boolean {
  return opts.tasks === true || file.toLowerCase().endsWith('.jsonl');
}

/**
 * A batch file as one experiment run: every line validated first (a bad line is reported with its
 * number, and fails the batch before anything starts unless `--skip-invalid`), then the same run
 * as an experiment file's, then a trajectory file per task and the summary.
 */
export async function runBatchCommand(file: string, opts: BatchOptions): Promise<void> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new CliError(`${file}: ${err instanceof Error ? err.message : String(err)}`, 2);
  }
  const { tasks, errors } = parseTaskLines(text);
  for (const e of errors)
    process.stderr.write(`${file}:${e.line}: ${e.message}${opts.skipInvalid ? ' (skipped)' : ''}\n`);
  if (errors.length > 0 && !opts.skipInvalid) {
    throw new CliError(
      `${file}: ${errors.length} invalid line(s); nothing was started (--skip-invalid runs the valid ones)`,
      2,
    );
  }
  if (tasks.length === 0) throw new CliError(`${file}: no valid task`, 2);

  const outDir = path.resolve(opts.out ?? 'output');
  const deps = await openRunDeps(opts);
  try {
    const startedAt = new Date();
    const message = await dispatchTaskBatch(deps.pool, {
      name: `tasks ${path.basename(file)} (${startedAt.toISOString()})`,
      tasks,
      cache: true,
    });
    // This run only: the agent's row keeps `cache: true`, so a rerun uses the cache again.
    if (opts.cache === false)
      message.agent.runtime_spec_json = { ...message.agent.runtime_spec_json, cache: 'refresh' };
    await superviseRun(deps, message, {
      json: opts.json === true,
      report: opts.report !== false,
      overrides: opts.concurrency ? { concurrentCases: opts.concurrency } : {},
    });
    const { summary, summaryFile } = await writeBatchOutput(deps.pool, {
      experimentId: message.experiment.id,
      workflowId: workflowIdForRun(message.experiment.id, message.message_id),
      tasksFile: path.resolve(file),
      outDir,
      startedAt,
      finishedAt: new Date(),
      invalidLines: errors.length,
    });
    const c = summary.counts;
    process.stdout.write(
      `Trajectories: ${path.join(outDir, 'trajectories')} (${c.total} files: ${c.succeeded} succeeded, ${c.failed} failed; ` +
        `cache hits ${summary.cache.hits} of ${c.total})\nSummary: ${summaryFile}\n`,
    );
  } finally {
    await deps.close();
  }
}
