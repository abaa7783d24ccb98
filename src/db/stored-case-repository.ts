import type pg from 'pg';
import { z } from 'zod';

/**
 * Reads of what run_cases already stores of finished cases (`benchctl rescore` judges them again
 * from it): the outcome columns of each latest case with its data item.
 */

const storedCaseRow = z.object({
  id: z.coerce.number().int(),
  status: z.string(),
  agent_output: z.unknown(),
  agent_trajectory: z.unknown(),
  logs: z.string().nullable(),
  latency_ms: z.coerce.number().nullable(),
  data_item_id: z.coerce.number().int(),
  user_input: z.string(),
  session_jsonl: z.string(),
  reference_output: z.unknown(),
});
export type StoredCase = z.output<typeof storedCaseRow>;

/** The experiment's latest attempt of every case (`is_latest`), by run case id. */
export async function listLatestStoredCases(pool: pg.Pool, experimentId: number): Promise<StoredCase[]> {
  const { rows } = await pool.query(
    `SELECT rc.id, rc.status, rc.agent_output, rc.agent_trajectory, rc.logs, rc.latency_ms,
            rc.data_item_id, di.user_input, di.session_jsonl, di.reference_output
       FROM run_cases rc JOIN data_items di ON di.id = rc.data_item_id
      WHERE rc.experiment_id = $1 AND rc.is_latest = TRUE
      ORDER BY rc.id`,
    [experimentId],
  );
  return rows.map((raw) => storedCaseRow.parse(raw));
}

/** run_cases.final_score of the given cases (NULL when no real score, §3.5). */
export async function getFinalScores(
  pool: pg.Pool,
  runCaseIds: number[],
): Promise<Map<number, number | null>> {
  const { rows } = await pool.query<{ id: number; final_score: number | null }>(
    'SELECT id, final_score FROM run_cases WHERE id = ANY($1::bigint[])',
    [runCaseIds],
  );
  return new Map(rows.map((r) => [r.id, r.final_score]));
}
