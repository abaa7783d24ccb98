import { condition, isCancellation, log, patched } from '@temporalio/workflow';
import type { CaseFinalSummary, CaseRef } from '../src/domain/activity-contract';
import { recordCaseOutcome, type RunProgress } from '../src/domain/experiment-run';
import { rootCauseText } from '../src/domain/errors';
import type { CasePhaseActivities } from './activity-proxies';
import type { ProgressPublisher } from './progress-publisher';
import type { TerminationWatch } from './termination-watch';

interface CaseRunnerDeps {
  workflowId: string;
  experimentId: number;
  progress: RunProgress;
  phases: CasePhaseActivities;
  publisher: ProgressPublisher;
  termination: TerminationWatch;
  /** CONSUMER_CONCURRENT_CASES: cases in their container phase at once. */
  concurrentCases: number;
  /** CONSUMER_SCORER_CONCURRENT_CASES: cases being judged at once. */
  scoringLimit: number;
  /** Runs that recorded 'case-phase-failures' end a case whose later phase failed for good (v4 ones do not). */
  phaseFailuresHandled: boolean;
  /** RunSettings.caseRetryBudgetSeconds, handed to the container phase (absent in older runs). */
  retryBudgetSeconds: number | undefined;
}

/**
 * One case through its phases: container (retried infra failures; agent failures are results),
 * then trajectory, score and final persist, or nothing more when the container phase finished the
 * case itself (the fast path). Owns the run's container and scoring slots: the container slot
 * covers the container phase only, so the next case may start while this one is judged.
 */
export class CaseRunner {
  /** Cases holding one of the `concurrentCases` container slots. */
  private slotsInUse = 0;
  private scoringInUse = 0;

  constructor(private readonly deps: CaseRunnerDeps) {}

  /** Whether a case may start now (the case loop waits on this). */
  hasFreeSlot(): boolean {
    return this.slotsInUse < this.deps.concurrentCases;
  }

  /**
   * Takes the container slot and runs the case (to be called in the step that saw `hasFreeSlot`).
   * The case releases the slot itself.
   */
  start(runCaseId: number): Promise<void> {
    this.slotsInUse++;
    return this.run(runCaseId);
  }

  private async run(runCaseId: number): Promise<void> {
    const { progress, publisher, termination } = this.deps;
    progress.started++;
    const ref: CaseRef = {
      workflowId: this.deps.workflowId,
      experimentId: this.deps.experimentId,
      runCaseId,
    };
    let slotHeld = true;
    const releaseSlot = () => {
      if (slotHeld) this.slotsInUse--;
      slotHeld = false;
    };
    try {
      let notExecuted: string | null = null;
      let needsJudge = true;
      try {
        const { retryBudgetSeconds } = this.deps;
        const exec = await this.deps.phases.container(runCaseId).executeCase({
          ...ref,
          finishInline: true,
          ...(retryBudgetSeconds === undefined ? {} : { retryBudgetSeconds }),
        });
        needsJudge = exec.needsJudge ?? true;
        if (exec.finalized) {
          // The container phase finished the case itself (nothing to judge): no further phase.
          releaseSlot();
          recordCaseOutcome(progress, runCaseId, exec.finalized.status, exec.finalized.errorMessage);
          publisher.afterCaseOutcome();
          await termination.recheckAfter(exec.finalized.status);
          return;
        }
        if (exec.status === 'not_active') {
          // The row left the active set under us (terminated by the platform): nothing to persist.
          recordCaseOutcome(progress, runCaseId, 'canceled', 'case no longer active');
          publisher.afterCaseOutcome();
          await termination.recheckAfter('canceled');
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
      if (this.deps.phaseFailuresHandled) {
        await this.laterPhases(ref, notExecuted, needsJudge);
        return;
      }
      // v4 runs: a later phase's failure escaped the case (every later phase retried without limit).
      // Its trajectory/score steps repeat laterPhases' on purpose: this path only replays recorded
      // histories, and folding the two into one async helper would add await steps, which can
      // reorder the commands of concurrent cases within one activation.
      if (notExecuted === null) {
        await this.deps.phases.trajectory(runCaseId).collectTrajectory(ref);
        // A failed case or unconfigured scorers get the §7.2 sentinels from finalize: no judge call.
        if (needsJudge) {
          await this.takeScoringSlot();
          try {
            await this.deps.phases.score(runCaseId).scoreCase(ref);
          } finally {
            this.scoringInUse--;
          }
        }
      }
      const fin = await this.deps.phases
        .finalize(runCaseId)
        .finalizeCase({ ...ref, notExecutedError: notExecuted });
      recordCaseOutcome(progress, runCaseId, fin.status, fin.errorMessage);
      publisher.afterCaseOutcome();
      await termination.recheckAfter(fin.status);
    } finally {
      releaseSlot();
    }
  }

  /**
   * Takes one of the run's scoring slots (at most scorerConcurrentCases cases judged at once). The
   * check and the take are one synchronous step: between two awaits no other case can slip in.
   */
  private async takeScoringSlot(): Promise<void> {
    const limit = this.deps.scoringLimit;
    if (patched('scoring-limit-recheck')) {
      // Every waiter wakes when a slot frees: each re-checks, so only one takes it.
      while (this.scoringInUse >= limit) await condition(() => this.scoringInUse < limit);
    } else {
      // Runs recorded before the marker let all waiters through at once; replay keeps that.
      await condition(() => this.scoringInUse < limit);
    }
    this.scoringInUse++;
  }

  /**
   * Trajectory, score and final persist of a case whose container phase is over (runs that
   * recorded 'case-phase-failures'). These phases retry without limit while the failure may pass;
   * a permanent one (a database error of class 22/23/42, made non-retryable at the activity
   * boundary) ends the case failed with E_CASE_PERSIST_FAILED instead of hanging the run or
   * escaping as an unhandled rejection, and the run goes on.
   */
  private async laterPhases(ref: CaseRef, notExecuted: string | null, needsJudge: boolean): Promise<void> {
    const { runCaseId } = ref;
    let phaseError: string | null = null;
    if (notExecuted === null) {
      try {
        await this.deps.phases.trajectory(runCaseId).collectTrajectory(ref);
        if (needsJudge) {
          await this.takeScoringSlot();
          try {
            await this.deps.phases.score(runCaseId).scoreCase(ref);
          } finally {
            this.scoringInUse--;
          }
        }
      } catch (err) {
        if (isCancellation(err)) throw err;
        phaseError = `E_CASE_PERSIST_FAILED: ${rootCauseText(err)}`;
      }
    }
    const finalize = (notExecutedError: string | null, discardPhases: boolean) =>
      this.deps.phases.finalize(runCaseId).finalizeCase({
        ...ref,
        notExecutedError,
        ...(discardPhases ? { discardPhases } : {}),
      });
    let fin: CaseFinalSummary;
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
    recordCaseOutcome(this.deps.progress, runCaseId, fin.status, fin.errorMessage);
    this.deps.publisher.afterCaseOutcome();
    await this.deps.termination.recheckAfter(fin.status);
  }
}
