import type pg from 'pg';
import type { TrajectorySource } from '../domain/activity-contract';
import type { CaseScore } from './run-case-repository';
import { toJsonbParam } from './postgres-text';

/** What the container phase learned about one case; stored whole in agentbench_case_results. */
export interface CaseRawResult {
  status: 'success' | 'failed' | 'timeout';
  errorMessage: string | null;
  exitCode: number | null;
  agentOutput: unknown;
  logs: string;
  stdoutTrajectory: unknown[] | null;
  agentUsage: unknown;
  /** containerPhaseMs: the whole container phase, container removal included (absent in older rows). */
  timings: { sandboxConnectMs: number; caseExecMs: number; totalMs: number; containerPhaseMs?: number };
  startedAt: string;
  finishedAt: string;
  image: string;
  containerName: string | null;
  attempt: number;
  /** Every request the case's mock gateway answered (absent when none ran). */
  mockRequests?: unknown[];
  /** The container was gone and every span it sent was stored when the phase ended. */
  telemetryComplete?: boolean;
  /**
   * Set when the case's agent allows reuse (src/cache): its key, and `reusedFrom` when this record
   * is a stored result of that case (no container was started).
   */
  resultCache?: {
    key: string;
    taskType: string;
    reusedFrom?: { workflowId: string; runCaseId: number; storedAt: string };
  };
}

/**
 * First write wins: a result that exists is never replaced by a later attempt's. The fast path
 * stores the trajectory with it (one write instead of two). Returns what is stored.
 */
export async function saveCaseResult(
  pool: pg.Pool,
  workflowId: string,
  runCaseId: number,
  result: CaseRawResult,
  trajectory: CaseTrajectory | null = null,
): Promise<StoredCaseResult> {
  const inserted = await pool.query(
    `INSERT INTO agentbench_case_results (workflow_id, run_case_id, result, trajectory) VALUES ($1, $2, $3, $4)
     ON CONFLICT (workflow_id, run_case_id) DO NOTHING`,
    [workflowId, runCaseId, toJsonbParam(result), trajectory ? toJsonbParam(trajectory) : null],
  );
  // Inserted: what we hold is what is stored, up to the text cleaning every later write applies again.
  if (inserted.rowCount === 1) return { result, trajectory };
  const existing = await loadCasePhases(pool, workflowId, runCaseId);
  if (!existing) throw new Error(`case result ${workflowId}/${runCaseId} vanished`);
  return { result: existing.result, trajectory: existing.trajectory };
}

/** The container phase's record and, once collected, the trajectory. */
export interface StoredCaseResult {
  result: CaseRawResult;
  trajectory: CaseTrajectory | null;
}

/** The trajectory phase's output (CONTRACT §4.4 steps, where they came from, OTel token usage). */
export interface CaseTrajectory {
  steps: unknown[];
  source: TrajectorySource;
  otelUsage: { inputTokens: number; outputTokens: number } | null;
  queryMs: number;
}

export interface StoredCaseScores {
  scores: CaseScore[];
  /** scorer_key → wall time, for usage_json.timings_ms.scorer_breakdown. */
  durationsMs: Record<string, number>;
}

export interface CasePhases {
  result: CaseRawResult;
  trajectory: CaseTrajectory | null;
  scores: StoredCaseScores | null;
}

export async function loadCasePhases(
  pool: pg.Pool,
  workflowId: string,
  runCaseId: number,
): Promise<CasePhases | null> {
  const r = await pool.query<{
    result: CaseRawResult;
    trajectory: CaseTrajectory | null;
    scores: StoredCaseScores | null;
  }>(
    'SELECT result, trajectory, scores FROM agentbench_case_results WHERE workflow_id = $1 AND run_case_id = $2',
    [workflowId, runCaseId],
  );
  const row = r.rows[0];
  return row ? { result: row.result, trajectory: row.trajectory, scores: row.scores } : null;
}

/** First write wins, like the container phase's record: a retried phase never changes a stored one. */
export async function saveCaseTrajectory(
  pool: pg.Pool,
  workflowId: string,
  runCaseId: number,
  t: CaseTrajectory,
): Promise<void> {
  await pool.query(
    `UPDATE agentbench_case_results SET trajectory = $3 WHERE workflow_id = $1 AND run_case_id = $2 AND trajectory IS NULL`,
    [workflowId, runCaseId, toJsonbParam(t)],
  );
}

export async function saveCaseScores(
  pool: pg.Pool,
  workflowId: string,
  runCaseId: number,
  s: StoredCaseScores,
): Promise<void> {
  await pool.query(
    `UPDATE agentbench_case_results SET scores = $3 WHERE workflow_id = $1 AND run_case_id = $2 AND scores IS NULL`,
    [workflowId, runCaseId, toJsonbParam(s)],
  );
}
