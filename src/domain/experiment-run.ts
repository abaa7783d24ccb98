/**
 * What travels through Temporal for one experiment run. Deliberately small: ids, counters, statuses
 * and short error text. Case inputs, outputs, logs and trajectories live in Postgres (ARCHITECTURE §1).
 * Pure: imported by workflow code.
 */
import type { CaseStatus } from './case-status';

export interface RunSettings {
  /** CONSUMER_CONCURRENT_CASES: cases in flight within this run. */
  concurrentCases: number;
  /** CONSUMER_MAX_RETRIES: attempts of a case's retryable (infra) phase. */
  caseMaxAttempts: number;
  /** Upper bound of one container-phase attempt, including pull, start, exec and after-exec. */
  caseActivityTimeoutSeconds: number;
  /**
   * How long the container phase's attempts may go on, from the first one's scheduling: retries are
   * bounded by this time, not by caseMaxAttempts (absent in runs started before; they keep the count).
   */
  caseRetryBudgetSeconds?: number;
  /** How often the run re-reads experiments.queue_status to honour manual termination. */
  terminationCheckSeconds: number;
  /** Continue-as-new once history grows past this many events (in-flight work drained first). */
  maxHistoryEvents: number;
  /** CONSUMER_SCORER_CONCURRENT_CASES: cases being scored at once (absent in runs started before scoring). */
  scorerConcurrentCases?: number;
  /** CONSUMER_SCORER_HARD_TIMEOUT_SECONDS, to size the scoring activity's timeout. */
  scorerHardTimeoutSeconds?: number;
}

export interface RunProgress {
  total: number;
  started: number;
  success: number;
  failed: number;
  timeout: number;
  canceled: number;
  /** Most recent non-success outcomes, newest last (bounded): what on-call sees in the UI query. */
  recentFailures: CaseFailure[];
}

export interface CaseFailure {
  runCaseId: number;
  status: CaseStatus;
  error: string;
}

export interface ExperimentRunInput {
  experimentId: number;
  messageId: string;
  totalCases: number;
  settings: RunSettings;
  /** Present on continued runs only: where the previous run stopped. */
  carry?: { cursor: number; progress: RunProgress; continuedRuns: number };
}

export type RunOutcome =
  'completed' | 'skipped_manual_terminated' | 'skipped_stale' | 'failed_before_start' | 'canceled';

export interface ExperimentRunResult {
  outcome: RunOutcome;
  progress: RunProgress;
  detail?: string;
}

const MAX_RECENT_FAILURES = 50;
const ERROR_TEXT_LIMIT = 500;

export function emptyProgress(total: number): RunProgress {
  return { total, started: 0, success: 0, failed: 0, timeout: 0, canceled: 0, recentFailures: [] };
}

export function finishedCount(p: RunProgress): number {
  return p.success + p.failed + p.timeout + p.canceled;
}

/** Folds one case outcome into the progress counters (mutates and returns p). */
export function recordCaseOutcome(
  p: RunProgress,
  runCaseId: number,
  status: CaseStatus,
  error: string | null,
): RunProgress {
  switch (status) {
    case 'success':
      p.success++;
      return p;
    case 'timeout':
      p.timeout++;
      break;
    case 'canceled':
      p.canceled++;
      break;
    default:
      p.failed++;
  }
  p.recentFailures.push({ runCaseId, status, error: (error ?? '').slice(0, ERROR_TEXT_LIMIT) });
  if (p.recentFailures.length > MAX_RECENT_FAILURES) p.recentFailures.shift();
  return p;
}

export function workflowIdForRun(experimentId: number, dedupSuffix: string): string {
  return `experiment-${experimentId}-${dedupSuffix}`;
}
