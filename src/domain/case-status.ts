/**
 * run_cases.status values and the guards of CONTRACT §3.2, plus the experiment aggregate of §3.4.
 * Pure: imported by workflows as well as by the database layer.
 */

export const CASE_STATUSES = [
  'pending',
  'queued',
  'running',
  'trajectory',
  'scoring',
  'success',
  'failed',
  'timeout',
  'canceled',
] as const;
export type CaseStatus = (typeof CASE_STATUSES)[number];

/** Statuses that still belong to a live run; the platform's terminate/fail actions use this set. */
export const ACTIVE_CASE_STATUSES = ['pending', 'queued', 'running', 'trajectory', 'scoring'] as const;

export const TERMINAL_CASE_STATUSES = ['success', 'failed', 'timeout', 'canceled'] as const;
type TerminalCaseStatus = (typeof TERMINAL_CASE_STATUSES)[number];

/** Progress transitions written while a case runs, with the previous statuses each allows (§3.2). */
export const PROGRESS_GUARDS = {
  queued: ['pending'],
  running: ['pending', 'queued', 'trajectory'],
  trajectory: ['running', 'scoring'],
  scoring: ['running', 'trajectory'],
} as const satisfies Record<string, readonly CaseStatus[]>;
export type ProgressStatus = keyof typeof PROGRESS_GUARDS;

/**
 * Our final persist is guarded too (the original's was not, §13.6): a result may only land on a row
 * that is still active, so `canceled` — or an earlier terminal result — is never overwritten.
 */
export const FINAL_PERSIST_GUARD: readonly CaseStatus[] = ACTIVE_CASE_STATUSES;

export function isTerminalStatus(s: string): s is TerminalCaseStatus {
  return (TERMINAL_CASE_STATUSES as readonly string[]).includes(s);
}

export interface CaseStatusCounts {
  total: number;
  /** running + trajectory + scoring */
  running: number;
  /** pending + queued */
  pending: number;
  success: number;
  /** failed + timeout */
  failed: number;
}

/** §3.4 step 3. */
export function experimentRunStatus(c: CaseStatusCounts): 'idle' | 'consuming' | 'done' | 'failed' {
  if (c.total === 0) return 'idle';
  if (c.running > 0 || c.pending > 0) return 'consuming';
  if (c.failed === 0) return 'done';
  if (c.success === 0) return 'failed';
  return 'done';
}
