import type pg from 'pg';
import type { CaseCursorEntry } from '../domain/activity-contract';
import { z } from 'zod';
import { withTransaction, type Database } from './experiment-repository';
import { toJsonbParam, toPostgresText } from './postgres-text';

/**
 * What one message asked for, stored once per workflow so that workflow and activity payloads carry
 * only ids (ARCHITECTURE §1). `request` is the validated message without run_cases, secrets redacted
 * by the caller; each run case's own part is a separate row, addressed by run_case_id or position.
 */

const INSERT_CHUNK_ROWS = 500;

const bigintId = z.coerce.number().int().positive();
const jsonObject = z.record(z.string(), z.unknown());

const saveInput = z.object({
  workflowId: z.string().min(1),
  experimentId: bigintId,
  messageId: z.string(),
  request: jsonObject,
  cases: z.array(z.object({ runCaseId: bigintId, caseInput: jsonObject })),
});

interface RunRequestToSave {
  workflowId: string;
  experimentId: number;
  messageId: string;
  request: object;
  /** In message order; stored positions are 1-based. */
  cases: Array<{ runCaseId: number; caseInput: object }>;
}

interface StoredRunRequest {
  experimentId: number;
  messageId: string;
  request: object;
}

/** Idempotent: a second save for the same workflow id changes nothing. */
export async function saveRunRequest(db: Database, input: RunRequestToSave): Promise<void> {
  const r = saveInput.parse(input);
  await withTransaction(db, async (client) => {
    const inserted = await client.query(
      `INSERT INTO agentbench_run_requests (workflow_id, experiment_id, message_id, request)
       VALUES ($1, $2, $3, $4::jsonb)
       ON CONFLICT (workflow_id) DO NOTHING`,
      [r.workflowId, r.experimentId, toPostgresText(r.messageId), toJsonbParam(r.request)],
    );
    // Request and cases are written in one transaction, so an existing request has all its cases.
    if (inserted.rowCount === 0) return;
    for (let start = 0; start < r.cases.length; start += INSERT_CHUNK_ROWS) {
      const chunk = r.cases.slice(start, start + INSERT_CHUNK_ROWS);
      const params: unknown[] = [r.workflowId];
      const values = chunk.map((c, i) => {
        params.push(c.runCaseId, start + i + 1, toJsonbParam(c.caseInput));
        const p = params.length;
        return `($1, $${p - 2}, $${p - 1}, $${p}::jsonb)`;
      });
      await client.query(
        `INSERT INTO agentbench_case_inputs (workflow_id, run_case_id, position, case_input)
         VALUES ${values.join(', ')}
         ON CONFLICT DO NOTHING`,
        params,
      );
    }
  });
}

export async function loadRunRequest(pool: pg.Pool, workflowId: string): Promise<StoredRunRequest | null> {
  const { rows } = await pool.query<{ experiment_id: unknown; message_id: string; request: object }>(
    'SELECT experiment_id, message_id, request FROM agentbench_run_requests WHERE workflow_id = $1',
    [workflowId],
  );
  const row = rows[0];
  if (!row) return null;
  return { experimentId: bigintId.parse(row.experiment_id), messageId: row.message_id, request: row.request };
}

export async function loadCaseInput(
  pool: pg.Pool,
  workflowId: string,
  runCaseId: number,
): Promise<object | null> {
  const { rows } = await pool.query<{ case_input: object }>(
    'SELECT case_input FROM agentbench_case_inputs WHERE workflow_id = $1 AND run_case_id = $2',
    [workflowId, runCaseId],
  );
  return rows[0]?.case_input ?? null;
}

/**
 * Keyset page of the message's run cases in message order: positions strictly after `afterPosition`.
 * Positions are 1-based, so `afterPosition = 0` reads from the start.
 */
export async function listCaseIds(
  pool: pg.Pool,
  workflowId: string,
  afterPosition: number,
  limit: number,
): Promise<CaseCursorEntry[]> {
  const { rows } = await pool.query<{ position: number; run_case_id: unknown }>(
    `SELECT position, run_case_id FROM agentbench_case_inputs
      WHERE workflow_id = $1 AND position > $2
      ORDER BY position
      LIMIT $3`,
    [workflowId, afterPosition, limit],
  );
  return rows.map((r) => ({ position: r.position, runCaseId: bigintId.parse(r.run_case_id) }));
}

/** Every stored case input of a run, in message order (a run's start retried from what was stored). */
export async function loadCaseInputs(pool: pg.Pool, workflowId: string): Promise<object[]> {
  const { rows } = await pool.query<{ case_input: object }>(
    'SELECT case_input FROM agentbench_case_inputs WHERE workflow_id = $1 ORDER BY position',
    [workflowId],
  );
  return rows.map((r) => r.case_input);
}
