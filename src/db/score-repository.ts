import type pg from 'pg';
import { z } from 'zod';
import { SENTINEL_SCORE } from '../domain/judge-score';
import { lockExperiment, withTransaction } from './experiment-repository';
import { toJsonbParam, toPostgresText } from './postgres-text';
import type { CaseScore } from './run-case-repository';

/**
 * Re-scoring with a subset of an experiment's scorers (`benchctl rescore --scorer`): unlike
 * persistCaseScores, which replaces every score of the case (CONTRACT §3.5), only the rows of the
 * given scorers are replaced and the others stay as they are.
 */

const id = z.number().int().positive();
const input = z.object({
  runCaseId: id,
  experimentId: id,
  scores: z
    .array(
      z.object({
        scorerKey: z.string().transform((k) => k || 'unknown'),
        evaluatorId: z.number().int(),
        score: z.number(),
        reason: z.string(),
        rawResult: z.record(z.string(), z.unknown()),
      }),
    )
    .min(1),
});

/**
 * Deletes the case's run_case_scores rows of these scorer keys and its evaluate_results rows of
 * these evaluator ids, inserts the new results, then recomputes final_score over all of the case's
 * scores with the same rule as the final persist (sentinel −1 results left out, NULL when none).
 * Statuses do not change, so there is no experiment refresh.
 */
export async function replaceScorerScores(
  pool: pg.Pool,
  args: { runCaseId: number; experimentId: number; scores: CaseScore[] },
): Promise<void> {
  const { runCaseId, experimentId, scores } = input.parse(args);
  const scorerKeys = scores.map((s) => toPostgresText(s.scorerKey));
  const linked = scores.filter((s) => s.evaluatorId > 0);
  await withTransaction(pool, async (client) => {
    await lockExperiment(client, experimentId);
    const found = await client.query(
      'SELECT 1 FROM run_cases WHERE id = $1 AND experiment_id = $2 FOR UPDATE',
      [runCaseId, experimentId],
    );
    if (found.rowCount === 0)
      throw new Error(`run case ${runCaseId} not found in experiment ${experimentId}`);

    await client.query(
      'DELETE FROM run_case_scores WHERE run_case_id = $1 AND scorer_key = ANY($2::text[])',
      [runCaseId, scorerKeys],
    );
    await client.query(
      'DELETE FROM evaluate_results WHERE run_case_id = $1 AND evaluator_id = ANY($2::bigint[])',
      [runCaseId, linked.map((s) => s.evaluatorId)],
    );
    for (const s of scores) {
      await client.query(
        `INSERT INTO run_case_scores (run_case_id, scorer_key, score, reason, raw_result_json)
         VALUES ($1, $2, $3, $4, $5::jsonb)`,
        [
          runCaseId,
          toPostgresText(s.scorerKey),
          s.score,
          toPostgresText(s.reason),
          toJsonbParam(s.rawResult),
        ],
      );
    }
    for (const s of linked) {
      await client.query(
        `INSERT INTO evaluate_results (run_case_id, evaluator_id, score, reason, raw_result)
         VALUES ($1, $2, $3, $4, $5::jsonb)`,
        [runCaseId, s.evaluatorId, s.score, toPostgresText(s.reason), toJsonbParam(s.rawResult)],
      );
    }
    await client.query(
      `UPDATE run_cases
          SET final_score = (SELECT avg(score) FILTER (WHERE score <> $2)
                               FROM run_case_scores WHERE run_case_id = $1),
              updated_at = now()
        WHERE id = $1`,
      [runCaseId, SENTINEL_SCORE],
    );
  });
}
