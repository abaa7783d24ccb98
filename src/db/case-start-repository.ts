import type pg from 'pg';
import type { StoredCaseResult } from './case-result-repository';

/** Everything the container phase reads before it may start a case. */
interface CaseStart {
  /** The container phase's stored record when an earlier attempt already finished the case. */
  stored: StoredCaseResult | null;
  /** The run_cases status; undefined when the row is gone (or belongs to another experiment). */
  status: string | undefined;
  /** The case's part of the run request (agentbench_case_inputs), unvalidated; null when missing. */
  caseInput: object | null;
}

/**
 * One round trip for the three reads on the critical path of every case: its stored result (a
 * retry must not run the agent again), its status (a canceled case must not start) and its input.
 * Always one row: each part is looked up on its own and may be missing.
 */
export async function loadCaseStart(
  pool: pg.Pool,
  ref: { workflowId: string; experimentId: number; runCaseId: number },
): Promise<CaseStart> {
  const { rows } = await pool.query<{
    stored: StoredCaseResult | null;
    status: string | null;
    case_input: object | null;
  }>(
    `SELECT (SELECT jsonb_build_object('result', result, 'trajectory', trajectory)
               FROM agentbench_case_results WHERE workflow_id = $1 AND run_case_id = $3) AS stored,
            (SELECT status FROM run_cases WHERE id = $3 AND experiment_id = $2) AS status,
            (SELECT case_input FROM agentbench_case_inputs WHERE workflow_id = $1 AND run_case_id = $3) AS case_input`,
    [ref.workflowId, ref.experimentId, ref.runCaseId],
  );
  const row = rows[0];
  return {
    stored: row?.stored ?? null,
    status: row?.status ?? undefined,
    caseInput: row?.case_input ?? null,
  };
}
