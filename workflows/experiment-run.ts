import {
  ActivityCancellationType,
  CancellationScope,
  condition,
  continueAsNew,
  defineQuery,
  deprecatePatch,
  isCancellation,
  log,
  patched,
  proxyActivities,
  setHandler,
  sleep,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities } from '../activities';
import {
  emptyProgress,
  finishedCount,
  recordCaseOutcome,
  type ExperimentRunInput,
  type ExperimentRunResult,
  type RunProgress,
} from '../src/domain/experiment-run';
import { rootCauseText } from '../src/domain/errors';
import { SA } from '../src/domain/search-attributes';

export const progressQuery = defineQuery<RunProgress>('progress');

const CASE_PAGE_SIZE = 200;

/**
 * Database-only steps. They retry without limit: a database outage pauses the run instead of
 * losing results, and retries add no history events.
 */
const DB_RETRY = { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1m' } as const;
const bookkeeping = proxyActivities<Activities>({ startToCloseTimeout: '2 minutes', retry: DB_RETRY });

/**
 * One experiment run: the platform's skip rules, then every case through its phases with at most
 * `concurrentCases` in flight. A case's container phase and its final persist are separate
 * activities, so a failure after the agent finished never re-runs the agent, and a crash loses
 * nothing that finished (each case is persisted as soon as it is done).
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

  /** The first page of cases when prepareRun returned it (fresh runs that recorded the marker). */
  let firstPage: Awaited<ReturnType<Activities['listCasePage']>> | undefined;
  if (!input.carry) {
    // Continued runs (carry) have no prepareRun and always page with listCasePage.
    deprecatePatch('first-page-in-prepare');
    const prep = await bookkeeping.prepareRun({
      workflowId,
      experimentId,
      messageId: input.messageId,
      firstPageLimit: CASE_PAGE_SIZE,
    });
    if (prep.skip) {
      return { outcome: prep.skip, progress, detail: prep.detail };
    }
    if (prep.failure) {
      // The whole run could not start (bad runtime spec, image unavailable): every case was
      // recorded failed with the reason, as the original's whole-batch failure does (§6.7).
      progress.failed = progress.total;
      publishProgress(progress);
      return { outcome: 'failed_before_start', progress, detail: prep.failure };
    }
    // A worker whose prepareRun predates firstPageLimit returns no page: then listCasePage reads it.
    firstPage = prep.firstPage;
  }

  const caseActivities = (runCaseId: number) =>
    proxyActivities<Activities>({
      activityId: `case-${runCaseId}/run`,
      startToCloseTimeout: `${settings.caseActivityTimeoutSeconds}s`,
      heartbeatTimeout: '30s',
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      retry: {
        initialInterval: '2s',
        backoffCoefficient: 2,
        maximumInterval: '1m',
        maximumAttempts: settings.caseMaxAttempts,
      },
    });
  const finalizeActivities = (runCaseId: number) =>
    proxyActivities<Activities>({
      activityId: `case-${runCaseId}/finalize`,
      startToCloseTimeout: '2 minutes',
      retry: DB_RETRY,
    });
  // The database phases are regular activities, not local ones: with many cases in flight, local
  // activity results arrive batched differently on replay than live, which breaks determinism.
  const trajectoryActivities = (runCaseId: number) =>
    proxyActivities<Activities>({
      activityId: `case-${runCaseId}/trajectory`,
      startToCloseTimeout: '2 minutes',
      retry: DB_RETRY,
    });
  const scoringActivities = (runCaseId: number) =>
    proxyActivities<Activities>({
      activityId: `case-${runCaseId}/score`,
      // Scorers of a case run concurrently, each bounded by the scorer hard timeout.
      startToCloseTimeout: `${(settings.scorerHardTimeoutSeconds ?? 120) + 120}s`,
      heartbeatTimeout: '30s',
      retry: DB_RETRY,
    });

  /** Cases anywhere in their lifecycle (drained before continue-as-new and after cancel). */
  let inFlight = 0;
  /** Cases holding one of the `concurrentCases` container slots. */
  let slotsInUse = 0;
  let scoringInUse = 0;
  const scoringLimit = settings.scorerConcurrentCases ?? 2;
  let cursor = input.carry?.cursor ?? 0;
  let startedInThisRun = 0;
  let terminatedBy: string | null = null;
  /** Workflow time (deterministic: the workflow task's start) of the last progress upsert. */
  let lastPublishedAt = Date.now();

  const runOneCase = async (runCaseId: number): Promise<void> => {
    progress.started++;
    const ref = { workflowId, experimentId, runCaseId };
    let slotHeld = true;
    const releaseSlot = () => {
      if (slotHeld) slotsInUse--;
      slotHeld = false;
    };
    try {
      let notExecuted: string | null = null;
      let needsJudge = true;
      try {
        const exec = await caseActivities(runCaseId).executeCase({ ...ref, finishInline: true });
        needsJudge = exec.needsJudge ?? true;
        if (exec.finalized) {
          // The container phase finished the case itself (nothing to judge): no further phase.
          releaseSlot();
          recordCaseOutcome(progress, runCaseId, exec.finalized.status, exec.finalized.errorMessage);
          maybePublish();
          await recheckTerminationAfter(exec.finalized.status);
          return;
        }
        if (exec.status === 'not_active') {
          // The row left the active set under us (terminated by the platform): nothing to persist.
          recordCaseOutcome(progress, runCaseId, 'canceled', 'case no longer active');
          maybePublish();
          await recheckTerminationAfter('canceled');
          return;
        }
      } catch (err) {
        if (isCancellation(err)) throw err;
        // Infra failure that outlived its retries, or a permanent one (never retried): the case is
        // recorded as not executed.
        notExecuted = `E_CASE_NOT_EXECUTED: ${rootCauseText(err)}`;
      }
      // The container is gone: the next case may start while this one is judged and persisted.
      releaseSlot();
      if (phaseFailuresHandled) {
        await laterPhases(ref, runCaseId, notExecuted, needsJudge);
        return;
      }
      if (notExecuted === null) {
        await trajectoryActivities(runCaseId).collectTrajectory(ref);
        // A failed case or unconfigured scorers get the §7.2 sentinels from finalize: no judge call.
        if (needsJudge) {
          await takeScoringSlot();
          try {
            await scoringActivities(runCaseId).scoreCase(ref);
          } finally {
            scoringInUse--;
          }
        }
      }
      const fin = await finalizeActivities(runCaseId).finalizeCase({ ...ref, notExecutedError: notExecuted });
      recordCaseOutcome(progress, runCaseId, fin.status, fin.errorMessage);
      maybePublish();
      await recheckTerminationAfter(fin.status);
    } finally {
      releaseSlot();
    }
  };

  /**
   * Takes one of the run's scoring slots (at most scorerConcurrentCases cases judged at once). The
   * check and the take are one synchronous step: between two awaits no other case can slip in.
   */
  const takeScoringSlot = async (): Promise<void> => {
    if (patched('scoring-limit-recheck')) {
      // Every waiter wakes when a slot frees: each re-checks, so only one takes it.
      while (scoringInUse >= scoringLimit) await condition(() => scoringInUse < scoringLimit);
    } else {
      // Runs recorded before the marker let all waiters through at once; replay keeps that.
      await condition(() => scoringInUse < scoringLimit);
    }
    scoringInUse++;
  };

  /**
   * Trajectory, score and final persist of a case whose container phase is over (runs that
   * recorded 'case-phase-failures'). These phases retry without limit while the failure may pass;
   * a permanent one (a database error of class 22/23/42, made non-retryable at the activity
   * boundary) ends the case failed with E_CASE_PERSIST_FAILED instead of hanging the run or
   * escaping as an unhandled rejection, and the run goes on.
   */
  const laterPhases = async (
    ref: { workflowId: string; experimentId: number; runCaseId: number },
    runCaseId: number,
    notExecuted: string | null,
    needsJudge: boolean,
  ): Promise<void> => {
    let phaseError: string | null = null;
    if (notExecuted === null) {
      try {
        await trajectoryActivities(runCaseId).collectTrajectory(ref);
        if (needsJudge) {
          await takeScoringSlot();
          try {
            await scoringActivities(runCaseId).scoreCase(ref);
          } finally {
            scoringInUse--;
          }
        }
      } catch (err) {
        if (isCancellation(err)) throw err;
        phaseError = `E_CASE_PERSIST_FAILED: ${rootCauseText(err)}`;
      }
    }
    const finalize = (notExecutedError: string | null, discardPhases: boolean) =>
      finalizeActivities(runCaseId).finalizeCase({
        ...ref,
        notExecutedError,
        ...(discardPhases ? { discardPhases } : {}),
      });
    let fin: Awaited<ReturnType<Activities['finalizeCase']>>;
    try {
      fin = await finalize(phaseError ?? notExecuted, phaseError !== null);
    } catch (err) {
      if (isCancellation(err)) throw err;
      // The full persist cannot land: a minimal failed row with the reason, which carries none of
      // the case's data (the container phase's record stays in agentbench_case_results).
      const reason = `E_CASE_PERSIST_FAILED: ${rootCauseText(err)}`;
      try {
        fin = await finalize(reason, true);
      } catch (again) {
        if (isCancellation(again)) throw again;
        // Not even that: the row stays active until the run reconciler closes it after the run.
        log.error('case could not be persisted', { runCaseId, code: 'E_CASE_PERSIST_FAILED', error: reason });
        fin = { status: 'failed', errorMessage: reason, persisted: false };
      }
    }
    recordCaseOutcome(progress, runCaseId, fin.status, fin.errorMessage);
    maybePublish();
    await recheckTerminationAfter(fin.status);
  };

  /**
   * A case found its row canceled under it: the platform may have terminated the run. Look now
   * rather than at the watcher's next tick, or the remaining cases (all canceled by the platform)
   * could end at once and the run report "completed". Awaited inside the case, so the case loop
   * cannot finish before the answer.
   */
  const recheckTerminationAfter = async (status: string): Promise<void> => {
    if (status !== 'canceled' || terminatedBy !== null) return;
    if (!patched('recheck-termination-on-canceled-case')) return;
    const state = await bookkeeping.checkRunState({ workflowId, experimentId, messageId: input.messageId });
    if (state.stop && terminatedBy === null) {
      terminatedBy = state.stop;
      caseLoop.cancel();
    }
  };

  const caseLoop = new CancellationScope();
  // Honour the platform's manual termination while the run is in flight (the original only
  // checked at start, §13.6). Its own scope, so finishing the run cancels its pending timer.
  const watcherScope = new CancellationScope();
  void watcherScope
    .run(async () => {
      for (;;) {
        await sleep(`${settings.terminationCheckSeconds}s`);
        const state = await bookkeeping.checkRunState({
          workflowId,
          experimentId,
          messageId: input.messageId,
        });
        if (state.stop) {
          terminatedBy = state.stop;
          caseLoop.cancel();
          return;
        }
      }
    })
    .catch((err: unknown) => {
      if (!isCancellation(err)) throw err;
    });

  try {
    await caseLoop.run(async () => {
      for (;;) {
        const page =
          firstPage ??
          (await bookkeeping.listCasePage({ workflowId, afterPosition: cursor, limit: CASE_PAGE_SIZE }));
        firstPage = undefined;
        if (page.length === 0) break;
        for (const c of page) {
          await condition(() => slotsInUse < settings.concurrentCases);
          // Decided before every case, not only between pages: a page of long cases (and the
          // termination watcher's events while they run) must not grow the history to Temporal's
          // limit. At least one case per run, so a run always makes progress.
          if (continueAnyPoint && startedInThisRun > 0 && shouldContinueAsNew()) await drainAndContinue();
          startedInThisRun++;
          slotsInUse++;
          inFlight++;
          cursor = c.position;
          void runOneCase(c.runCaseId)
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
    // Cancelled by `benchctl cancel` / the Temporal UI, or terminated by the platform. In-flight
    // container activities were cancelled and have removed their containers (we waited for them).
    await CancellationScope.nonCancellable(async () => {
      await condition(() => inFlight === 0);
      const canceled = await bookkeeping.cancelRun({
        workflowId,
        experimentId,
        reason: terminatedBy ?? 'canceled via Temporal',
        markExperimentTerminated: terminatedBy === null,
      });
      progress.canceled += canceled;
      publishProgress(progress);
    });
    watcherScope.cancel();
    if (terminatedBy !== null) {
      return { outcome: 'canceled', progress, detail: terminatedBy };
    }
    throw err;
  }
  watcherScope.cancel();
  publishProgress(progress);
  return { outcome: 'completed', progress };

  /**
   * Called right after each single case outcome is recorded, in the same synchronous step: which
   * upserts are emitted must not depend on how many results one activation delivers (local
   * activity results arrive one per activation live, but together on replay). At most ~20 per run.
   */
  function maybePublish(): void {
    const done = finishedCount(progress);
    const step = Math.max(1, Math.floor(progress.total / 20));
    if (done === progress.total) {
      publishProgress(progress);
    } else if (done % step === 0 && Date.now() - lastPublishedAt >= PROGRESS_UPSERT_MIN_INTERVAL_MS) {
      // Each upsert is a visibility write on the server: on fast runs 20 of them cost ~5% of the
      // throughput (bench/sandbox-overhead). The `progress` query is always exact.
      lastPublishedAt = Date.now();
      publishProgress(progress);
    }
  }

  /** In-flight cases finish first (their activities belong to this run); then the chain goes on from `cursor`. */
  async function drainAndContinue(): Promise<never> {
    await condition(() => inFlight === 0);
    watcherScope.cancel();
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

/** Runs upsert progress at most this often (plus once at the end). */
const PROGRESS_UPSERT_MIN_INTERVAL_MS = 5_000;

function publishProgress(p: RunProgress): void {
  upsertSearchAttributes([
    { key: SA.casesDone, value: finishedCount(p) },
    { key: SA.casesFailed, value: p.failed + p.timeout },
  ]);
}
