import type pg from 'pg';

/** What the container phase learned about one case; stored whole in agentbench_case_results. */
export interface CaseRawResult {
  status: 'success' | 'failed' | 'timeout';
  errorMessage: string | null;
  exitCode: number | null;
  agentOutput: unknown;
  logs: string;
  stdoutTrajectory: unknown[] | null;
  agentUsage: unknown;
  timings: { sandboxConnectMs: number; caseExecMs: number; totalMs: number };
  startedAt: string;
  finishedAt: string;
  image: string;
  containerName: string | null;
  attempt: number;
}

/** First write wins: a result that exists is never replaced by a later attempt's. */
export async function saveCaseResult(
  pool: pg.Pool,
  workflowId: string,
  runCaseId: number,
  result: CaseRawResult,
): Promise<CaseRawResult> {
  const inserted = await pool.query<{ result: CaseRawResult }>(
    `INSERT INTO agentbench_case_results (workflow_id, run_case_id, result) VALUES ($1, $2, $3)
     ON CONFLICT (workflow_id, run_case_id) DO NOTHING RETURNING result`,
    [workflowId, runCaseId, JSON.stringify(result)],
  );
  if (inserted.rows[0]) return inserted.rows[0].result;
  const existing = await loadCaseResult(pool, workflowId, runCaseId);
  if (!existing) throw new Error(`case result ${workflowId}/${runCaseId} vanished`);
  return existing;
}

export async function loadCaseResult(
  pool: pg.Pool,
  workflowId: string,
  runCaseId: number,
): Promise<CaseRawResult | null> {
  const r = await pool.query<{ result: CaseRawResult }>(
    'SELECT result FROM agentbench_case_results WHERE workflow_id = $1 AND run_case_id = $2',
    [workflowId, runCaseId],
  );
  return r.rows[0]?.result ?? null;
}
