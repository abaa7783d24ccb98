/**
 * What crosses the workflow↔activity boundary: the input and the result of every activity of the
 * task queue. Small by design (ids, counters, statuses, short error text); a case's input, output,
 * logs and trajectory stay in Postgres (ARCHITECTURE §1). Type-only: workflows import it,
 * activities (activities/) implement it.
 */
import type { CaseStatus } from './case-status';
import type { RunOutcome } from './experiment-run';

// --- once per run -------------------------------------------------------------------------------

export interface RunRef {
  workflowId: string;
  experimentId: number;
  messageId: string;
}

export interface PrepareRunInput extends RunRef {
  /**
   * When set, the result carries the run's first page of cases (what `listCasePage` from position 0
   * with this limit returns), so the workflow starts its first case without another activity.
   */
  firstPageLimit?: number;
}

/** One case of a run in message order: `position` is the cursor a continued run resumes from. */
export interface CaseCursorEntry {
  position: number;
  runCaseId: number;
}

export interface PrepareRunResult {
  skip?: Extract<RunOutcome, 'skipped_manual_terminated' | 'skipped_stale'>;
  detail?: string;
  /** Set when the run could not start; every case has been recorded failed with this text. */
  failure?: string;
  /** With `failure`: how many cases that recorded as failed (the worker's cases_finished metric reads it). */
  failedCases?: number;
  /** With `firstPageLimit`, when the run may start: its first cases in message order. */
  firstPage?: CaseCursorEntry[];
}

export interface CasePageInput {
  workflowId: string;
  afterPosition: number;
  limit: number;
}

/** `stop` says why the run must stop (the platform terminated or superseded it), null to go on. */
export interface RunStateCheck {
  stop: string | null;
}

export interface CancelRunInput {
  workflowId: string;
  experimentId: number;
  reason: string;
  /** Whether the experiment itself becomes manual_terminated (a cancel of ours, not the platform's). */
  markExperimentTerminated: boolean;
}

// --- per case -----------------------------------------------------------------------------------

export interface CaseRef {
  workflowId: string;
  experimentId: number;
  runCaseId: number;
}

export interface ExecuteCaseInput extends CaseRef {
  /** The workflow accepts a case finished in the container phase (runs that recorded the fast-path marker). */
  finishInline?: boolean;
  /**
   * How long after the first attempt was scheduled a retry may still start (runs that carry
   * RunSettings.caseRetryBudgetSeconds; older runs are bounded by their attempt count).
   */
  retryBudgetSeconds?: number;
}

/** Result of the container phase: small by design, the full record is in agentbench_case_results. */
export interface CaseExecutionSummary {
  status: 'success' | 'failed' | 'timeout' | 'not_active';
  errorMessage: string | null;
  exitCode: number | null;
  /** Whether any scorer would call a judge for this case; if not, the score phase is skipped. */
  needsJudge?: boolean;
  /**
   * Set when the container phase also ran the trajectory and final persist itself (no judge to call,
   * telemetry complete): the case is done and the workflow schedules no further phase for it.
   */
  finalized?: CaseFinalSummary;
  /** The result cache was consulted (the agent allows reuse): `hit` = no container was started. */
  cache?: 'hit' | 'miss';
}

export type TrajectorySource = 'logs' | 'spans' | 'stdout' | 'none';

export interface TrajectorySummary {
  source: TrajectorySource;
  steps: number;
}

export interface CaseScoresSummary {
  scores: Array<{ scorerKey: string; score: number }>;
}

export interface FinalizeCaseInput extends CaseRef {
  /** Set when the container phase never produced a record: the case is persisted failed with it. */
  notExecutedError: string | null;
  /**
   * A later phase failed for good (or the full persist did): the case is persisted failed with
   * `notExecutedError` alone, whatever the earlier phases stored.
   */
  discardPhases?: boolean;
}

export interface CaseFinalSummary {
  status: CaseStatus;
  errorMessage: string | null;
  persisted: boolean;
}

// --- the task queue's activities ----------------------------------------------------------------

export interface RunActivities {
  prepareRun(input: PrepareRunInput): Promise<PrepareRunResult>;
  listCasePage(input: CasePageInput): Promise<CaseCursorEntry[]>;
  checkRunState(ref: RunRef): Promise<RunStateCheck>;
  cancelRun(input: CancelRunInput): Promise<number>;
}

export interface CaseActivities {
  executeCase(input: ExecuteCaseInput): Promise<CaseExecutionSummary>;
  collectTrajectory(ref: CaseRef): Promise<TrajectorySummary>;
  scoreCase(ref: CaseRef): Promise<CaseScoresSummary>;
  finalizeCase(input: FinalizeCaseInput): Promise<CaseFinalSummary>;
}

export type Activities = RunActivities & CaseActivities;
