import type pg from 'pg';

/**
 * Idempotency-Key records of the HTTP API (migration 006). `claimIdempotencyKey` runs in the
 * caller's transaction and locks the key's row until it commits: a second request with the same key
 * waits there, then sees what the first one recorded (its run), never dispatching a second run.
 */

type IdempotencyClaim =
  | { kind: 'new' }
  | { kind: 'replay'; workflowId: string }
  /** The key was used for another body (or another operation). */
  | { kind: 'conflict' };

interface IdempotencyKey {
  principal: string;
  key: string;
  operation: string;
  requestSha256: string;
}

export async function claimIdempotencyKey(
  client: pg.PoolClient,
  k: IdempotencyKey,
): Promise<IdempotencyClaim> {
  await client.query(
    `INSERT INTO agentbench_api_idempotency (principal, idempotency_key, operation, request_sha256)
     VALUES ($1, $2, $3, $4) ON CONFLICT (principal, idempotency_key) DO NOTHING`,
    [k.principal, k.key, k.operation, k.requestSha256],
  );
  const { rows } = await client.query<{
    operation: string;
    request_sha256: string;
    workflow_id: string | null;
  }>(
    `SELECT operation, request_sha256, workflow_id FROM agentbench_api_idempotency
      WHERE principal = $1 AND idempotency_key = $2 FOR UPDATE`,
    [k.principal, k.key],
  );
  const row = rows[0];
  if (!row) throw new Error('idempotency record vanished inside its own transaction');
  if (row.operation !== k.operation || row.request_sha256 !== k.requestSha256) return { kind: 'conflict' };
  return row.workflow_id ? { kind: 'replay', workflowId: row.workflow_id } : { kind: 'new' };
}

/** In the claiming transaction: the run this key dispatched. */
export async function recordIdempotentRun(
  client: pg.PoolClient,
  k: Pick<IdempotencyKey, 'principal' | 'key'>,
  workflowId: string,
): Promise<void> {
  await client.query(
    'UPDATE agentbench_api_idempotency SET workflow_id = $3 WHERE principal = $1 AND idempotency_key = $2',
    [k.principal, k.key, workflowId],
  );
}

/** Keys older than `days` are forgotten (a retry after that would start a new run). */
export async function pruneIdempotencyKeys(pool: pg.Pool, days: number): Promise<number> {
  const r = await pool.query(
    'DELETE FROM agentbench_api_idempotency WHERE created_at < now() - make_interval(days => $1::int)',
    [days],
  );
  return r.rowCount ?? 0;
}
