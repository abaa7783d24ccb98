import Table from 'cli-table3';
import type pg from 'pg';
import { z } from 'zod';
import { persistCaseScores } from '../../db/run-case-repository';
import type { Logger } from '../../logger';
import { scoreCase, type ScorerDefinition, type ScorerResult } from '../../scoring/case-scorer';
import type { Config } from '../../config';
import { CliError, loadConfigOrExit, openDatabase, processLogger } from '../process-context';

/**
 * `benchctl rescore <experimentId> [--scorer key]`: scores the latest finished cases of an
 * experiment again, from what run_cases already stores, with the experiment's evaluators as they
 * are now (prompt, model, key). No container runs. With --scorer only that evaluator is asked and
 * only its score rows are replaced.
 */

/** Cases that ran to the end; active ones are still being scored by their run, canceled ones never were. */
const RESCORABLE_STATUSES = ['success', 'failed', 'timeout'];

const evaluatorRow = z.object({
  id: z.coerce.number().int(),
  evaluator_key: z.string(),
  name: z.string(),
  prompt_template: z.string(),
  base_url: z.string(),
  model_name: z.string(),
  api_style: z.string(),
  api_key: z.string(),
});

const caseRow = z.object({
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
type StoredCase = z.output<typeof caseRow>;

/** CONTRACT §2.4: what the platform puts in a message, one scorer per linked evaluator, oldest first. */
async function loadScorers(pool: pg.Pool, experimentId: number): Promise<ScorerDefinition[]> {
  const { rows } = await pool.query(
    `SELECT e.id, e.evaluator_key, e.name, e.prompt_template, e.base_url, e.model_name, e.api_style, e.api_key
       FROM experiment_evaluators ee JOIN evaluators e ON e.id = ee.evaluator_id
      WHERE ee.experiment_id = $1
      ORDER BY e.created_at ASC, e.id ASC`,
    [experimentId],
  );
  return rows.map((raw) => {
    const e = evaluatorRow.parse(raw);
    return {
      id: e.id,
      scorer_key: e.evaluator_key,
      name: e.name || e.evaluator_key,
      scorer_config: {
        prompt_template: e.prompt_template,
        base_url: e.base_url,
        model_name: e.model_name,
        api_style: e.api_style,
        api_key: e.api_key,
      },
    };
  });
}

async function loadLatestCases(pool: pg.Pool, experimentId: number): Promise<StoredCase[]> {
  const { rows } = await pool.query(
    `SELECT rc.id, rc.status, rc.agent_output, rc.agent_trajectory, rc.logs, rc.latency_ms,
            rc.data_item_id, di.user_input, di.session_jsonl, di.reference_output
       FROM run_cases rc JOIN data_items di ON di.id = rc.data_item_id
      WHERE rc.experiment_id = $1 AND rc.is_latest = TRUE
      ORDER BY rc.id`,
    [experimentId],
  );
  return rows.map((raw) => caseRow.parse(raw));
}

async function rescoreCase(
  deps: { pool: pg.Pool; config: Config; log: Logger },
  experimentId: number,
  stored: StoredCase,
  scorers: ScorerDefinition[],
  onlySomeScorers: boolean,
): Promise<ScorerResult[]> {
  const results = await scoreCase({
    caseRecord: {
      status: stored.status,
      output: stored.agent_output,
      trajectory: stored.agent_trajectory ?? [],
      logs: stored.logs ?? '',
      latencyMs: stored.latency_ms ?? 0,
    },
    caseInput: {
      dataItemId: stored.data_item_id,
      userInput: stored.user_input,
      sessionJsonl: stored.session_jsonl,
      // The platform's data_items has neither column (CONTRACT §12.15), so its messages never carry them.
      referenceTrajectory: null,
      referenceOutput: stored.reference_output,
      traceId: null,
    },
    scorers,
    settings: deps.config.evaluator,
    log: deps.log.child({ experiment_id: experimentId, run_case_id: stored.id }),
  });
  await persistCaseScores(deps.pool, { runCaseId: stored.id, experimentId, scores: results, onlyTheseScorers: onlySomeScorers });
  return results;
}

/** Runs `fn` over `items` with at most `limit` in flight, keeping the input order in the output. */
async function mapWithLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      out[index] = await fn(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return out;
}

export async function rescoreCommand(experimentId: number, opts: { scorer?: string }): Promise<void> {
  const config = loadConfigOrExit();
  const log = processLogger(config, 'rescore');
  const pool = await openDatabase(config, log, { localDefault: true });
  try {
    const exists = await pool.query('SELECT 1 FROM experiments WHERE id = $1', [experimentId]);
    if (exists.rowCount === 0) throw new CliError(`experiment ${experimentId} not found`);

    let scorers = await loadScorers(pool, experimentId);
    if (opts.scorer !== undefined) {
      const known = scorers.map((s) => s.scorer_key);
      scorers = scorers.filter((s) => s.scorer_key === opts.scorer);
      if (scorers.length === 0) {
        throw new CliError(
          `experiment ${experimentId} has no evaluator "${opts.scorer}" (it has: ${known.join(', ') || 'none'})`,
        );
      }
    }

    const cases = await loadLatestCases(pool, experimentId);
    const rescorable = cases.filter((c) => RESCORABLE_STATUSES.includes(c.status));
    const results = await mapWithLimit(rescorable, config.consumer.scorerConcurrentCases, (c) =>
      rescoreCase({ pool, config, log }, experimentId, c, scorers, opts.scorer !== undefined),
    );

    const finals = await pool.query<{ id: number; final_score: number | null }>(
      'SELECT id, final_score FROM run_cases WHERE id = ANY($1::bigint[])',
      [rescorable.map((c) => c.id)],
    );
    const finalById = new Map(finals.rows.map((r) => [r.id, r.final_score]));
    const keys = results[0]?.map((r) => r.scorerKey) ?? scorers.map((s) => s.scorer_key);
    const table = new Table({
      head: ['case', 'status', ...keys, 'final'],
      style: process.stdout.isTTY ? {} : { head: [], border: [] },
    });
    rescorable.forEach((c, i) => {
      const byKey = new Map((results[i] ?? []).map((r) => [r.scorerKey, r.score]));
      table.push([c.id, c.status, ...keys.map((k) => byKey.get(k) ?? ''), finalById.get(c.id) ?? '']);
    });
    process.stdout.write(`${table.toString()}\n`);
    const skipped = cases.length - rescorable.length;
    process.stdout.write(
      `rescored ${rescorable.length} case(s) of experiment ${experimentId}` +
        (skipped > 0 ? `; ${skipped} skipped (not finished: ${RESCORABLE_STATUSES.join('/')} only)\n` : '\n'),
    );
  } finally {
    await pool.end();
  }
}
