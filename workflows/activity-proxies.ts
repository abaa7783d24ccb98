import { ActivityCancellationType, proxyActivities } from '@temporalio/workflow';
import type { Activities } from '../activities';
import type { RunSettings } from '../src/domain/experiment-run';

/**
 * Database-only steps. They retry without limit: a database outage pauses the run instead of
 * losing results, and retries add no history events.
 */
const DB_RETRY = { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1m' } as const;

/** The run's own steps (prepareRun, listCasePage, checkRunState, cancelRun). */
export const bookkeeping = proxyActivities<Activities>({ startToCloseTimeout: '2 minutes', retry: DB_RETRY });

/** The activities of one case's phases, with the activity id `case-<id>/<phase>` on-call looks for. */
export interface CasePhaseActivities {
  /**
   * The container phase, cancelled with its container removed. Retried by time in runs that carry a
   * retry budget (the activity refuses to start an attempt once it is spent, after storing any
   * finished record), up to `caseMaxAttempts` in older runs. Activity options are not part of replay,
   * so this needs no marker.
   */
  container(runCaseId: number): Pick<Activities, 'executeCase'>;
  trajectory(runCaseId: number): Pick<Activities, 'collectTrajectory'>;
  score(runCaseId: number): Pick<Activities, 'scoreCase'>;
  finalize(runCaseId: number): Pick<Activities, 'finalizeCase'>;
}

export function casePhaseActivities(settings: RunSettings): CasePhaseActivities {
  return {
    container: (runCaseId) =>
      proxyActivities<Activities>({
        activityId: `case-${runCaseId}/run`,
        startToCloseTimeout: `${settings.caseActivityTimeoutSeconds}s`,
        heartbeatTimeout: '30s',
        cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        retry:
          settings.caseRetryBudgetSeconds === undefined
            ? {
                initialInterval: '2s',
                backoffCoefficient: 2,
                maximumInterval: '1m',
                maximumAttempts: settings.caseMaxAttempts,
              }
            : { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '10s' },
      }),
    // The database phases are regular activities, not local ones: with many cases in flight, local
    // activity results arrive batched differently on replay than live, which breaks determinism.
    trajectory: (runCaseId) =>
      proxyActivities<Activities>({
        activityId: `case-${runCaseId}/trajectory`,
        startToCloseTimeout: '2 minutes',
        retry: DB_RETRY,
      }),
    score: (runCaseId) =>
      proxyActivities<Activities>({
        activityId: `case-${runCaseId}/score`,
        // Scorers of a case run concurrently, each bounded by the scorer hard timeout.
        startToCloseTimeout: `${(settings.scorerHardTimeoutSeconds ?? 120) + 120}s`,
        heartbeatTimeout: '30s',
        retry: DB_RETRY,
      }),
    finalize: (runCaseId) =>
      proxyActivities<Activities>({
        activityId: `case-${runCaseId}/finalize`,
        startToCloseTimeout: '2 minutes',
        retry: DB_RETRY,
      }),
  };
}
