import {
  CancellationScope,
  condition,
  continueAsNew,
  defineQuery,
  deprecatePatch,
  isCancellation,
  patched,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { CaseCursorEntry } from '../src/domain/activity-contract';
import {
  emptyProgress,
  type ExperimentRunInput,
  type ExperimentRunResult,
  type RunProgress,
} from '../src/domain/experiment-run';
import { bookkeeping, casePhaseActivities } from './activity-proxies';
import { CaseRunner } from './case-runner';
import { ProgressPublisher, publishProgress } from './progress-publisher';
import { CASE_PAGE_SIZE, startRun } from './run-start';
import { TerminationWatch } from './termination-watch';

export const progressQuery = defineQuery<RunProgress>('progress');

/**
 * One experiment run: the platform's skip rules (`startRun`), then every case through its phases
 * (`CaseRunner`) with at most `concurrentCases` in flight, paged from Postgres; the platform's
 * termination honoured (`TerminationWatch`), a cancel compensated, long runs continued as new. A
 * case's container phase and its final persist are separate activities, so a failure after the
 * agent finished never re-runs the agent, and a crash loses nothing that finished (each case is
 * persisted as soon as it is done).
 */
export async function experimentRunWorkflow(input: ExperimentRunInput): Promise<ExperimentRunResult> {
  const { workflowId } = workflowInfo();
  const { experimentId, settings } = input;
  const progress = input.carry?.progress ?? emptyProgress(input.totalCases);
  setHandler(progressQuery, () => progress);
  // Retired patches (their old paths are gone, see docs/architecture.md "Determinism"): histories
  // recorded with `patched(...)` carry these markers, so the calls stay, in the same order, until
  // no open run can have been recorded by a worker that called `patched`.
  deprecatePatch('case-phases-v2');
  deprecatePatch('case-fast-path');
  // Runs started before these markers replay as recorded: a later phase's failure escaped the case
  // (it could not happen then: every later phase retried without limit), and continue-as-new was
  // only considered between pages.
  const phaseFailuresHandled = patched('case-phase-failures');
  const continueAnyPoint = phaseFailuresHandled && patched('continue-as-new-any-point');

  /** The first page of cases when prepareRun returned it; continued runs (carry) page with listCasePage. */
  let firstPage: CaseCursorEntry[] | undefined;
  if (!input.carry) {
    const start = await startRun(input, workflowId, progress);
    if ('ended' in start) return start.ended;
    firstPage = start.firstPage;
  }

  const caseLoop = new CancellationScope();
  const termination = new TerminationWatch(
    { workflowId, experimentId, messageId: input.messageId },
    caseLoop,
    settings.terminationCheckSeconds,
  );
  const cases = new CaseRunner({
    workflowId,
    experimentId,
    progress,
    phases: casePhaseActivities(settings),
    publisher: new ProgressPublisher(progress),
    termination,
    concurrentCases: settings.concurrentCases,
    scoringLimit: settings.scorerConcurrentCases ?? 2,
    phaseFailuresHandled,
    retryBudgetSeconds: settings.caseRetryBudgetSeconds,
  });
  /** Cases anywhere in their lifecycle (drained before continue-as-new and after cancel). */
  let inFlight = 0;
  let cursor = input.carry?.cursor ?? 0;
  let startedInThisRun = 0;

  termination.start();
  try {
    await caseLoop.run(async () => {
      for (;;) {
        const page =
          firstPage ??
          (await bookkeeping.listCasePage({ workflowId, afterPosition: cursor, limit: CASE_PAGE_SIZE }));
        firstPage = undefined;
        if (page.length === 0) break;
        for (const c of page) {
          await condition(() => cases.hasFreeSlot());
          // Decided before every case, not only between pages: a page of long cases (and the
          // termination watcher's events while they run) must not grow the history to Temporal's
          // limit. At least one case per run, so a run always makes progress.
          if (continueAnyPoint && startedInThisRun > 0 && shouldContinueAsNew()) await drainAndContinue();
          startedInThisRun++;
          inFlight++;
          cursor = c.position;
          void cases
            .start(c.runCaseId)
            .catch((err: unknown) => {
              if (!isCancellation(err)) throw err;
            })
            .finally(() => {
              inFlight--;
            });
        }
        if (shouldContinueAsNew()) await drainAndContinue();
      }
      await condition(() => inFlight === 0);
    });
  } catch (err) {
    if (!isCancellation(err)) throw err;
    return await compensateCancel(err);
  }
  termination.stop();
  publishProgress(progress);
  return { outcome: 'completed', progress };

  /**
   * Cancelled by `benchctl cancel` / the Temporal UI, or terminated by the platform. In-flight
   * container activities were cancelled and have removed their containers (we waited for them).
   */
  async function compensateCancel(err: unknown): Promise<ExperimentRunResult> {
    await CancellationScope.nonCancellable(async () => {
      await condition(() => inFlight === 0);
      const canceled = await bookkeeping.cancelRun({
        workflowId,
        experimentId,
        reason: termination.stoppedBy ?? 'canceled via Temporal',
        markExperimentTerminated: termination.stoppedBy === null,
      });
      progress.canceled += canceled;
      publishProgress(progress);
    });
    termination.stop();
    if (termination.stoppedBy !== null) {
      return { outcome: 'canceled', progress, detail: termination.stoppedBy };
    }
    throw err;
  }

  /** In-flight cases finish first (their activities belong to this run); then the chain goes on from `cursor`. */
  async function drainAndContinue(): Promise<never> {
    await condition(() => inFlight === 0);
    termination.stop();
    return continueAsNew<typeof experimentRunWorkflow>({
      ...input,
      carry: { cursor, progress, continuedRuns: (input.carry?.continuedRuns ?? 0) + 1 },
    });
  }

  function shouldContinueAsNew(): boolean {
    const info = workflowInfo();
    return info.continueAsNewSuggested || info.historyLength > settings.maxHistoryEvents;
  }
}
