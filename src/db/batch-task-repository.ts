import type pg from 'pg';
import { batchTaskSchema, type BatchTask } from '../domain/batch-task';
import { toJsonbParam } from './postgres-text';

/** One statement for all the tasks of a batch, with their data items (same order). */
export async function insertBatchTasks(
  client: pg.PoolClient | pg.Pool,
  rows: Array<{ dataItemId: number; task: BatchTask }>,
): Promise<void> {
  if (rows.length === 0) return;
  await client.query(
    `INSERT INTO agentbench_batch_tasks (data_item_id, task_id, task_type, task)
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::jsonb[])
     ON CONFLICT (data_item_id) DO NOTHING`,
    [
      rows.map((r) => r.dataItemId),
      rows.map((r) => r.task.task_id),
      rows.map((r) => r.task.task_type),
      rows.map((r) => toJsonbParam(r.task)),
    ],
  );
}

/** The task of a data item, or null when the item is not a batch task (an ordinary case). */
export async function loadBatchTask(pool: pg.Pool, dataItemId: number): Promise<BatchTask | null> {
  const r = await pool.query<{ task: unknown }>(
    'SELECT task FROM agentbench_batch_tasks WHERE data_item_id = $1',
    [dataItemId],
  );
  const row = r.rows[0];
  return row ? batchTaskSchema.parse(row.task) : null;
}
