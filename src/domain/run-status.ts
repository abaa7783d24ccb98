/**
 * The status of one experiment run (one workflow) as the API and the result events report it.
 * Pure: derived from the run's case counts and, where known, its workflow's state.
 */

export const RUN_STATUSES = ['queued', 'running', 'done', 'failed', 'canceled'] as const;
export type RunStatus = (typeof RUN_STATUSES)[number];

/** The run's cases by status (latest or not: a run owns exactly the rows of its message). */
export interface RunCaseCounts {
  total: number;
  pending: number;
  queued: number;
  running: number;
  trajectory: number;
  scoring: number;
  success: number;
  failed: number;
  timeout: number;
  canceled: number;
}

export function emptyRunCaseCounts(): RunCaseCounts {
  return {
    total: 0,
    pending: 0,
    queued: 0,
    running: 0,
    trajectory: 0,
    scoring: 0,
    success: 0,
    failed: 0,
    timeout: 0,
    canceled: 0,
  };
}

export function finishedCases(c: RunCaseCounts): number {
  return c.success + c.failed + c.timeout + c.canceled;
}

/**
 * How a run ended, from its cases: canceled when any case was canceled (by us or the platform), or
 * when it ended with cases never run (skipped); otherwise the platform's §3.4 rule — failed only when
 * no case succeeded, done otherwise (a run with some failed cases is done, as the experiment is).
 */
export function endedRunStatus(c: RunCaseCounts): Exclude<RunStatus, 'queued' | 'running'> {
  if (c.canceled > 0 || finishedCases(c) < c.total) return 'canceled';
  if (c.total > 0 && c.success === 0) return 'failed';
  return 'done';
}

/** The workflow's execution status as the Temporal client names it (WorkflowExecutionStatusName). */
export type WorkflowState =
  | 'RUNNING'
  | 'COMPLETED'
  | 'FAILED'
  | 'CANCELLED'
  | 'TERMINATED'
  | 'CONTINUED_AS_NEW'
  | 'TIMED_OUT'
  | 'PAUSED'
  | 'UNSPECIFIED'
  | 'UNKNOWN';

/**
 * Still open: running, paused, or a run that continued as new (its chain goes on). The one answer
 * for every reader (status, events, the reconciler, the reaper), so a paused run is never closed by
 * one and open to another.
 */
export function isOpenWorkflowState(workflow: string | null | undefined): boolean {
  return workflow === 'RUNNING' || workflow === 'CONTINUED_AS_NEW' || workflow === 'PAUSED';
}

/**
 * A run's status for a reader. While its workflow is open it is `queued` until a case has started
 * and `running` after; once closed it is what its cases say, except that a workflow failed or timed
 * out is `failed` and one canceled or terminated from outside is `canceled` whatever its cases say.
 * A run whose workflow is unknown (not found) is judged by its cases alone.
 */
export function runStatus(workflow: WorkflowState | null, c: RunCaseCounts): RunStatus {
  if (isOpenWorkflowState(workflow) || (workflow === null && c.total > finishedCases(c))) {
    const started = c.running + c.trajectory + c.scoring + finishedCases(c);
    return started > 0 ? 'running' : 'queued';
  }
  if (workflow === 'FAILED' || workflow === 'TIMED_OUT') return 'failed';
  if (workflow === 'CANCELLED' || workflow === 'TERMINATED') return 'canceled';
  return endedRunStatus(c);
}

/** The error code at the start of an error message (`E_AGENT_EXIT_NON_ZERO: exit code 1`), if any. */
export function errorCodeOf(message: string | null | undefined): string | null {
  const m = /^(E_[A-Z0-9_]+)/.exec(message ?? '');
  return m?.[1] ?? null;
}
