import type { Context } from '@temporalio/activity';
import { CancelledFailure } from '@temporalio/common';
import type { ActivityInterceptorsFactory } from '@temporalio/worker';
import { z } from 'zod';
import type { ActivityOutcome, WorkerMetrics } from './orchestrator-metrics';

/**
 * Per-activity duration/outcome metrics and the final status of each case, taken from what the
 * activities return — so the activities themselves stay free of metrics code.
 *
 * Labelled by activity type (`executeCase`, `collectTrajectory`, `scoreCase`, `finalizeCase`, …),
 * never by activity id: ids carry the case id (`case-901/run`), one series per case.
 */

/** How a case reaches its final status, read from the result of the activity that wrote it. */
const caseOutcomes: Record<string, (result: unknown, metrics: WorkerMetrics) => void> = {
  // The final persist; `status` is what the row holds afterwards (also when it was canceled meanwhile).
  finalizeCase: (result, metrics) => {
    const r = z.object({ status: z.string() }).safeParse(result);
    if (r.success) metrics.caseFinished(r.data.status);
  },
  // The container phase's fast path, which ran the final persist itself.
  // (Also the result cache's outcome for a case whose agent allows reuse.)
  executeCase: (result, metrics) => {
    const cache = z.object({ cache: z.enum(['hit', 'miss']) }).safeParse(result);
    if (cache.success) metrics.resultCacheLookup(cache.data.cache);
    const r = z.object({ finalized: z.object({ status: z.string() }) }).safeParse(result);
    if (r.success) metrics.caseFinished(r.data.finalized.status);
  },
  // Cancellation or the platform's termination: the number of still-active cases set `canceled`.
  cancelRun: (result, metrics) => {
    const r = z.number().int().nonnegative().safeParse(result);
    if (r.success) metrics.caseFinished('canceled', r.data);
  },
  // A run that could not start (bad runtime spec, image unavailable) fails all its cases at once.
  prepareRun: (result, metrics) => {
    const r = z
      .object({ failure: z.string(), failedCases: z.number().int().nonnegative() })
      .safeParse(result);
    if (r.success) metrics.caseFinished('failed', r.data.failedCases);
  },
};

function outcomeOf(err: unknown, ctx: Context): ActivityOutcome {
  return err instanceof CancelledFailure || ctx.cancellationSignal.aborted ? 'canceled' : 'failed';
}

/**
 * For `Worker.create({ interceptors: { activity: [...] } })`. `activityNames` are the registered
 * activities; any other type is counted as `other`, so the label set stays closed.
 */
export function activityMetricsInterceptor(
  metrics: WorkerMetrics,
  activityNames: readonly string[],
): ActivityInterceptorsFactory {
  const known = new Set(activityNames);
  return (ctx) => ({
    inbound: {
      async execute(input, next) {
        const { activityType, currentAttemptScheduledTimestampMs } = ctx.info;
        const activity = known.has(activityType) ? activityType : 'other';
        const waited = Number.isFinite(currentAttemptScheduledTimestampMs)
          ? (Date.now() - currentAttemptScheduledTimestampMs) / 1000
          : null;
        const done = metrics.activityStarted(activity, waited);
        let result: unknown;
        try {
          result = await next(input);
        } catch (err) {
          done(outcomeOf(err, ctx));
          throw err;
        }
        done('completed');
        try {
          caseOutcomes[activity]?.(result, metrics);
        } catch {
          // Metrics must never fail an activity that has already done its work.
        }
        return result;
      },
    },
  });
}
