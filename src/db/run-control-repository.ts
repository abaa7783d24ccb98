import type pg from 'pg';
import { ACTIVE_CASE_STATUSES, PROGRESS_GUARDS } from '../domain/case-status';
import { lockExperiment, refreshExperiment, withTransaction } from './experiment-repository';
import { recordTerminalTransitions } from './result-event-outbox';

const ACTIVE = [...ACTIVE_CASE_STATUSES];
const QUEUED_FROM = [...PROGRESS_GUARDS.queued];

/**
 * Batch start (CONTRACT §3.1 item 1) for every case of one run in one statement: pending → queued,
 * guarded by PROGRESS_GUARDS.queued, with the §3.4 refresh, without reading the run's case ids first.
 * Returns the number of rows changed.
 */
export async function queueRunCases(
  pool: pg.Pool,
  p: { workflowId: string; experimentId: number },
): Promise<number> {
  return withTransaction(pool, async (client) => {
    const status = await lockExperiment(client, p.experimentId);
    const r = await client.query(
      `UPDATE run_cases SET status = 'queued', updated_at = now()
        WHERE experiment_id = $2 AND status = ANY($3::text[])
          AND id IN (SELECT run_case_id FROM agentbench_case_inputs WHERE workflow_id = $1)`,
      [p.workflowId, p.experimentId, QUEUED_FROM],
    );
    await refreshExperiment(client, p.experimentId, { status });
    return r.rowCount ?? 0;
  });
}

/**
 * A run that cannot start at all (bad runtime spec, image unavailable) fails every still-active case
 * of that run with the reason, as the original's whole-batch failure does (CONTRACT §6.7).
 */
export async function failRunCases(
  pool: pg.Pool,
  p: { workflowId: string; experimentId: number; errorMessage: string; resultEvents?: boolean },
): Promise<number> {
  return withTransaction(pool, async (client) => {
    await lockExperiment(client, p.experimentId);
    return endActiveCases(client, { ...p, status: 'failed', reason: p.errorMessage });
  });
}

/**
 * Cancels the still-active cases of one run. With `terminateExperiment` the experiment is first
 * left exactly as the platform's own terminateExperiment leaves it (CONTRACT §3.3): queue_status
 * manual_terminated, queue_message_id NULL, finished_at set — so the platform's "run again" works.
 */
export async function cancelRunCases(
  pool: pg.Pool,
  p: {
    workflowId: string;
    experimentId: number;
    reason: string;
    terminateExperiment: boolean;
    resultEvents?: boolean;
  },
): Promise<number> {
  return withTransaction(pool, async (client) => {
    const previous = await lockExperiment(client, p.experimentId);
    if (
      p.terminateExperiment &&
      previous !== null &&
      ['queued', 'consuming', 'test_case'].includes(previous)
    ) {
      await client.query(
        `UPDATE experiments SET queue_status = 'manual_terminated', queue_message_id = NULL,
                finished_at = now(), updated_at = now() WHERE id = $1`,
        [p.experimentId],
      );
    }
    return endActiveCases(client, { ...p, status: 'canceled' });
  });
}

/** An active case of a run, as the run reconciler sees it. */
interface ActiveRunCase {
  workflowId: string;
  experimentId: number;
  runCaseId: number;
}

/**
 * Active cases (with the runs that hold them) whose row has not changed for `minIdleSeconds`: the
 * candidates of the run reconciler. A case may belong to several runs (a message delivered twice
 * under different ids); every one is listed.
 */
export async function listIdleActiveRunCases(
  pool: pg.Pool,
  p: { minIdleSeconds: number; limit?: number },
): Promise<ActiveRunCase[]> {
  const { rows } = await pool.query<{ workflow_id: string; experiment_id: number; run_case_id: number }>(
    `SELECT ci.workflow_id, rc.experiment_id, rc.id AS run_case_id
       FROM run_cases rc
       JOIN agentbench_case_inputs ci ON ci.run_case_id = rc.id
      WHERE rc.status = ANY($1::text[]) AND rc.updated_at < now() - make_interval(secs => $2)
      ORDER BY rc.id
      LIMIT $3`,
    [ACTIVE, p.minIdleSeconds, p.limit ?? 5000],
  );
  return rows.map((r) => ({
    workflowId: r.workflow_id,
    experimentId: r.experiment_id,
    runCaseId: r.run_case_id,
  }));
}

/**
 * Closes still-active cases of a run that ended without closing them (terminated from outside, its
 * workflow failed): `canceled` or `failed` with the reason, the §3.4 refresh, their result events.
 * Guarded like every terminal write: a row that finished meanwhile is left alone.
 */
export async function closeOrphanedCases(
  pool: pg.Pool,
  p: {
    workflowId: string;
    experimentId: number;
    runCaseIds: number[];
    status: 'canceled' | 'failed';
    reason: string;
    resultEvents?: boolean;
  },
): Promise<number> {
  return withTransaction(pool, async (client) => {
    await lockExperiment(client, p.experimentId);
    return endActiveCases(client, p);
  });
}

/**
 * Ends still-active cases of one run — all of them, or only `runCaseIds` — with `status` and the
 * reason, then the §3.4 refresh and their result events; in the caller's transaction, which holds
 * the experiment lock. Guarded by the status: a row that finished meanwhile is left alone.
 */
async function endActiveCases(
  client: pg.PoolClient,
  p: {
    workflowId: string;
    experimentId: number;
    status: 'canceled' | 'failed';
    reason: string;
    runCaseIds?: number[];
    resultEvents?: boolean;
  },
): Promise<number> {
  const which = p.runCaseIds
    ? { sql: 'id = ANY($5::bigint[])', param: p.runCaseIds }
    : {
        sql: 'id IN (SELECT run_case_id FROM agentbench_case_inputs WHERE workflow_id = $5)',
        param: p.workflowId,
      };
  const r = await client.query<{ id: number }>(
    `UPDATE run_cases SET status = $2, error_message = $3, finished_at = now(), updated_at = now()
      WHERE experiment_id = $1 AND status = ANY($4::text[]) AND ${which.sql}
     RETURNING id`,
    [p.experimentId, p.status, p.reason, ACTIVE, which.param],
  );
  await refreshExperiment(client, p.experimentId);
  await recordTerminalTransitions(client, {
    experimentId: p.experimentId,
    runCaseIds: r.rows.map((row) => row.id),
    options: { workflowId: p.workflowId, resultEvents: p.resultEvents },
  });
  return r.rowCount ?? 0;
}
