import type pg from 'pg';
import { experimentRunStatus, type CaseStatusCounts } from '../domain/case-status';

interface ExperimentQueueState {
  queueStatus: string | null;
  queueMessageId: string | null;
}

/** CONTRACT §3.1: read once per message for the skip rules of §3.3; a missing row reads as nulls. */
export async function getExperimentQueueState(
  pool: pg.Pool,
  experimentId: number,
): Promise<ExperimentQueueState> {
  const { rows } = await pool.query<{ queue_status: string | null; queue_message_id: string | null }>(
    'SELECT queue_status, queue_message_id FROM experiments WHERE id = $1 AND deleted_at IS NULL',
    [experimentId],
  );
  const row = rows[0];
  return { queueStatus: row?.queue_status ?? null, queueMessageId: row?.queue_message_id ?? null };
}

/** Whether the experiments row exists (deleted ones included). */
export async function experimentExists(pool: pg.Pool, experimentId: number): Promise<boolean> {
  const { rowCount } = await pool.query('SELECT 1 FROM experiments WHERE id = $1', [experimentId]);
  return (rowCount ?? 0) > 0;
}

/**
 * Whether a message's rows are there: its experiment (deleted ones included, like experimentExists)
 * and, of its run case ids, those with no run_cases row of that experiment. One round trip.
 */
export async function findMessageRows(
  pool: pg.Pool,
  experimentId: number,
  runCaseIds: number[],
): Promise<{ experiment: boolean; missingRunCaseIds: number[] }> {
  const { rows } = await pool.query<{ experiment: boolean; missing: string[] }>(
    `SELECT EXISTS (SELECT 1 FROM experiments WHERE id = $1) AS experiment,
            ARRAY(SELECT c::text FROM unnest($2::bigint[]) AS c
                   WHERE NOT EXISTS (SELECT 1 FROM run_cases rc WHERE rc.id = c AND rc.experiment_id = $1)
                   ORDER BY c) AS missing`,
    [experimentId, runCaseIds],
  );
  const row = rows[0];
  return { experiment: row?.experiment ?? false, missingRunCaseIds: (row?.missing ?? []).map(Number) };
}

/** A pool, or a client inside a transaction of the caller's (then `withTransaction` joins it). */
export type Database = pg.Pool | pg.PoolClient;

function isClient(db: Database): db is pg.PoolClient {
  return typeof (db as pg.PoolClient).release === 'function';
}

/**
 * Runs `fn` in a transaction: a new one on a pool, or the caller's when given a client that is in
 * one already (so several repository writes can commit together, e.g. the API's idempotency record
 * with the rows it dispatched).
 */
export async function withTransaction<T>(
  db: Database,
  fn: (client: pg.PoolClient) => Promise<T>,
): Promise<T> {
  if (isClient(db)) return fn(db);
  const pool = db;
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    client.release();
    return result;
  } catch (err) {
    try {
      await client.query('ROLLBACK');
      client.release();
    } catch (rollbackErr) {
      // The session is unusable; destroy it rather than hand it back to the pool.
      client.release(rollbackErr as Error);
    }
    throw err;
  }
}

/**
 * Locks the experiment row for the rest of the transaction. Every writer here takes this lock before
 * touching run_cases, so concurrent per-case transactions cannot both count a stale aggregate (each
 * refresh sees the others' committed rows) and the lock order experiment → run_cases stays the same
 * everywhere, which avoids deadlocks between our transactions.
 */
export async function lockExperiment(client: pg.PoolClient, experimentId: number): Promise<string | null> {
  const { rows } = await client.query<{ queue_status: string }>(
    'SELECT queue_status FROM experiments WHERE id = $1 FOR NO KEY UPDATE',
    [experimentId],
  );
  return rows[0]?.queue_status ?? null;
}

/**
 * CONTRACT §3.4, run inside the caller's transaction after every status write. Returns the
 * experiment's queue_status afterwards (unchanged when manual_terminated), null if the row is gone.
 *
 * One deliberate difference: the original rewrote finished_at on every refresh of a finished
 * experiment (§13.18), so it drifted with each late write. Here finished_at is set only when it is
 * still NULL or the queue_status actually changes, so it records when the run finished.
 */
export async function refreshExperiment(
  client: pg.PoolClient,
  experimentId: number,
  /** What `lockExperiment` returned when the caller already took the lock in this transaction. */
  locked?: { status: string | null },
): Promise<string | null> {
  const previous = locked ? locked.status : await lockExperiment(client, experimentId);
  if (previous === null) return null;
  if (previous === 'manual_terminated') return previous;

  // While any latest case is active the aggregate is 'consuming' whatever the other counts are
  // (§3.4 step 3), and the (experiment_id, is_latest, status) index answers that without a scan;
  // the full count runs only when the experiment may have finished. O(1) instead of O(cases).
  const { rows: activeRows } = await client.query<{ active: boolean }>(
    `SELECT EXISTS (SELECT 1 FROM run_cases WHERE experiment_id = $1 AND is_latest = TRUE
                      AND status IN ('pending', 'queued', 'running', 'trajectory', 'scoring')) AS active`,
    [experimentId],
  );
  const rows: CaseStatusCounts[] = activeRows[0]?.active
    ? [{ total: 1, running: 1, pending: 0, success: 0, failed: 0 }]
    : (
        await client.query<CaseStatusCounts>(
          `SELECT count(*)::int AS total,
                  (count(*) FILTER (WHERE status IN ('running', 'trajectory', 'scoring')))::int AS running,
                  (count(*) FILTER (WHERE status IN ('pending', 'queued')))::int AS pending,
                  (count(*) FILTER (WHERE status = 'success'))::int AS success,
                  (count(*) FILTER (WHERE status IN ('failed', 'timeout')))::int AS failed
             FROM run_cases
            WHERE experiment_id = $1 AND is_latest = TRUE`,
          [experimentId],
        )
      ).rows;
  const counts = rows[0];
  if (!counts) throw new Error('aggregate query returned no row');
  const runStatus = experimentRunStatus(counts);
  const next = previous === 'test_case' ? 'test_case' : runStatus;

  await client.query(
    `UPDATE experiments
        SET queue_status = $2::text,
            started_at = CASE WHEN $3::text = 'consuming' AND started_at IS NULL THEN now() ELSE started_at END,
            finished_at = CASE WHEN $3::text IN ('done', 'failed') AND (finished_at IS NULL OR queue_status <> $2::text)
                               THEN now() ELSE finished_at END,
            updated_at = now()
      WHERE id = $1`,
    [experimentId, next, runStatus],
  );
  return next;
}

/**
 * The §3.4 refresh after a case moved INTO an active status, as an UPDATE statement for the caller
 * to embed (the caller appends its own conditions): the aggregate is then 'consuming' by definition,
 * so nothing needs counting or locking — the experiment row is written only when that changes
 * something (first case of a run, or started_at still empty). Per-case progress transitions of a
 * large run therefore never queue behind each other on the experiment row.
 */
export function activationRefreshSql(experimentIdParam: string): string {
  return `UPDATE experiments
        SET queue_status = CASE WHEN queue_status = 'test_case' THEN queue_status ELSE 'consuming' END,
            started_at = COALESCE(started_at, now()),
            updated_at = now()
      WHERE id = ${experimentIdParam} AND queue_status <> 'manual_terminated'
        AND (queue_status NOT IN ('consuming', 'test_case') OR started_at IS NULL)`;
}
