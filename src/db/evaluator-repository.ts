import type pg from 'pg';
import { z } from 'zod';
import type { EvaluatorRow } from '../domain/scoring-input';

const evaluatorRow = z.object({
  id: z.coerce.number().int(),
  evaluator_key: z.string(),
  name: z.string(),
  prompt_template: z.string(),
  base_url: z.string(),
  model_name: z.string(),
  api_style: z.string(),
  api_key: z.string(),
}) satisfies z.ZodType<EvaluatorRow>;

/**
 * The evaluators linked to an experiment, oldest first (`evaluators.created_at`, then id): the
 * order of the scorers in the platform's message (CONTRACT §2.4). Read-only; the rows are the
 * platform's.
 */
export async function listExperimentEvaluators(
  pool: pg.Pool | pg.PoolClient,
  experimentId: number,
): Promise<EvaluatorRow[]> {
  const { rows } = await pool.query(
    `SELECT e.id, e.evaluator_key, e.name, e.prompt_template, e.base_url, e.model_name, e.api_style, e.api_key
       FROM experiment_evaluators ee JOIN evaluators e ON e.id = ee.evaluator_id
      WHERE ee.experiment_id = $1
      ORDER BY e.created_at ASC, e.id ASC`,
    [experimentId],
  );
  return rows.map((raw) => evaluatorRow.parse(raw));
}
