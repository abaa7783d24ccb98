import type pg from 'pg';
import type { CaseRawResult, CaseTrajectory } from './case-result-repository';
import { toJsonbParam } from './postgres-text';

interface CachedResult {
  result: CaseRawResult;
  trajectory: CaseTrajectory;
  sourceWorkflowId: string;
  sourceRunCaseId: number;
  createdAt: Date;
}

/** An unexpired entry, counted as a hit in the same statement; null on a miss. */
export async function takeCachedResult(pool: pg.Pool, cacheKey: string): Promise<CachedResult | null> {
  const r = await pool.query<{
    result: CaseRawResult;
    trajectory: CaseTrajectory;
    source_workflow_id: string;
    source_run_case_id: string;
    created_at: Date;
  }>(
    `UPDATE agentbench_result_cache SET hits = hits + 1, last_hit_at = now()
      WHERE cache_key = $1 AND expires_at > now()
      RETURNING result, trajectory, source_workflow_id, source_run_case_id, created_at`,
    [cacheKey],
  );
  const row = r.rows[0];
  if (!row) return null;
  return {
    result: row.result,
    trajectory: row.trajectory,
    sourceWorkflowId: row.source_workflow_id,
    sourceRunCaseId: Number(row.source_run_case_id),
    createdAt: row.created_at,
  };
}

interface CacheEntry {
  cacheKey: string;
  taskType: string;
  imageId: string;
  result: CaseRawResult;
  trajectory: CaseTrajectory;
  workflowId: string;
  runCaseId: number;
  ttlSeconds: number;
}

/**
 * Idempotent (a retried finalize writes the same entry again). A newer result replaces an expired
 * or older one; the hit count starts over with it.
 */
export async function storeCachedResult(pool: pg.Pool, e: CacheEntry): Promise<void> {
  await pool.query(
    `INSERT INTO agentbench_result_cache
       (cache_key, task_type, image_id, result, trajectory, source_workflow_id, source_run_case_id, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))
     ON CONFLICT (cache_key) DO UPDATE SET
       task_type = EXCLUDED.task_type, image_id = EXCLUDED.image_id, result = EXCLUDED.result,
       trajectory = EXCLUDED.trajectory, source_workflow_id = EXCLUDED.source_workflow_id,
       source_run_case_id = EXCLUDED.source_run_case_id, created_at = now(), expires_at = EXCLUDED.expires_at,
       hits = 0, last_hit_at = NULL
     WHERE agentbench_result_cache.source_workflow_id <> EXCLUDED.source_workflow_id
        OR agentbench_result_cache.source_run_case_id <> EXCLUDED.source_run_case_id`,
    [
      e.cacheKey,
      e.taskType,
      e.imageId,
      toJsonbParam(e.result),
      toJsonbParam(e.trajectory),
      e.workflowId,
      e.runCaseId,
      e.ttlSeconds,
    ],
  );
}

/** Removes expired entries; returns how many. */
export async function purgeExpiredResults(pool: pg.Pool): Promise<number> {
  const r = await pool.query('DELETE FROM agentbench_result_cache WHERE expires_at <= now()');
  return r.rowCount ?? 0;
}
