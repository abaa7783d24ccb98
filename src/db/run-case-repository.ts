import type pg from 'pg';
import { z } from 'zod';
import {
  ACTIVE_CASE_STATUSES,
  FINAL_PERSIST_GUARD,
  PROGRESS_GUARDS,
  type ProgressStatus,
} from '../domain/case-status';
import {
  activationRefreshSql,
  lockExperiment,
  refreshExperiment,
  withTransaction,
  type Database,
} from './experiment-repository';
import { toJsonbParam, toPostgresText } from './postgres-text';
import { recordTerminalTransitions, type ResultEventOptions } from './result-event-outbox';

/**
 * Writes to run_cases (CONTRACT §3.1, §3.2, §3.5, §3.6). Each function is one transaction that
 * locks the experiment row first and, where it changes case statuses, ends with the §3.4 refresh.
 */

/** The judge's sentinel for "no verdict" (CONTRACT §7.3). */
const SENTINEL_SCORE = -1;

const id = z.number().int().positive();
const idList = z.array(id);
const jsonObject = z.record(z.string(), z.unknown());
const bigintColumn = z.coerce.number().int();

const caseScore = z.object({
  scorerKey: z.string().transform((k) => k || 'unknown'),
  evaluatorId: z.number().int(),
  score: z.number(),
  reason: z.string(),
  rawResult: jsonObject,
});

export interface CaseScore {
  scorerKey: string;
  /** evaluators.id; 0 when the scorer has none, then only run_case_scores gets a row. */
  evaluatorId: number;
  score: number;
  reason: string;
  rawResult: object;
}

const caseResult = z.object({
  runCaseId: id,
  experimentId: id,
  status: z.enum(['success', 'failed', 'timeout']),
  agentTrajectory: z.unknown(),
  agentOutput: z.unknown(),
  latencyMs: z.number().nonnegative().transform(Math.round),
  logs: z.string(),
  errorMessage: z.string().nullable(),
  runtimeSnapshot: jsonObject,
  inspectEvalId: z.string().nullable(),
  inspectSampleId: z.string().nullable(),
  usage: jsonObject,
  artifacts: jsonObject.optional(),
  inputTokens: z.number().int().nonnegative().nullable().optional(),
  outputTokens: z.number().int().nonnegative().nullable().optional(),
  // Dates cross Temporal payloads as ISO strings.
  startedAt: z.coerce.date().nullable().optional(),
  scores: z.array(caseScore).nullable(),
});

export interface CaseResultRow {
  runCaseId: number;
  experimentId: number;
  status: 'success' | 'failed' | 'timeout';
  /** Stored as JSON; null/undefined become SQL NULL. */
  agentTrajectory: unknown;
  /** Stored as JSON (a bare string stays a JSON string); null/undefined become SQL NULL. */
  agentOutput: unknown;
  latencyMs: number;
  logs: string;
  errorMessage: string | null;
  runtimeSnapshot: object;
  inspectEvalId: string | null;
  inspectSampleId: string | null;
  usage: object;
  /** Left unchanged when omitted (the platform default '{}'). */
  artifacts?: object;
  /** Left unchanged when omitted. */
  inputTokens?: number | null;
  outputTokens?: number | null;
  /** Fills started_at only if no `running` transition set it. */
  startedAt?: Date | null;
  /** null: leave the score tables alone. */
  scores: CaseScore[] | null;
}

type ParsedScore = z.output<typeof caseScore>;

const nullIfEmpty = (s: string | null): string | null => (s ? toPostgresText(s) : null);

const transitionInput = z.object({
  experimentId: id,
  runCaseId: id,
  to: z.enum(Object.keys(PROGRESS_GUARDS) as [ProgressStatus, ...ProgressStatus[]]),
});

/** A guarded progress write (§3.2); false when the row was not in an allowed previous status. */
export async function transitionCaseStatus(
  pool: pg.Pool,
  input: { experimentId: number; runCaseId: number; to: ProgressStatus },
): Promise<boolean> {
  const { experimentId, runCaseId, to } = transitionInput.parse(input);
  const startedAt = to === 'running' ? ', started_at = COALESCE(started_at, now())' : '';
  // One statement (atomic on its own): a case moves twice per run, and a transaction around two
  // statements cost four round trips. Every progress status is active, so the experiment's refresh
  // can only mean 'consuming', and only when the case actually moved.
  const { rows } = await pool.query<{ moved: boolean }>(
    `WITH moved AS (
       UPDATE run_cases SET status = $3, updated_at = now()${startedAt}
        WHERE id = $1 AND experiment_id = $2 AND status = ANY($4::text[])
       RETURNING 1
     ), refreshed AS (
       ${activationRefreshSql('$2')} AND EXISTS (SELECT 1 FROM moved)
       RETURNING 1
     )
     SELECT EXISTS (SELECT 1 FROM moved) AS moved`,
    [runCaseId, experimentId, to, PROGRESS_GUARDS[to]],
  );
  return rows[0]?.moved ?? false;
}

/**
 * The final persist of §3.1 item 3, but guarded by FINAL_PERSIST_GUARD: a row that is no longer
 * active (canceled, or already finished) is left alone and nothing else is written. Returns whether
 * the result landed. Either way the case's result event is recorded (if it is terminal and has
 * none: a case the platform canceled gets its event here), and the run's when this closes it.
 */
export async function persistCaseResult(
  pool: pg.Pool,
  row: CaseResultRow,
  events: ResultEventOptions = {},
): Promise<boolean> {
  const r = caseResult.parse(row);
  const params: unknown[] = [r.runCaseId, r.experimentId, FINAL_PERSIST_GUARD];
  const set = (column: string, value: unknown, cast = ''): string => {
    params.push(value);
    return `${column} = $${params.length}${cast}`;
  };
  const assignments = [
    set('status', r.status),
    set('agent_trajectory', toJsonbParam(r.agentTrajectory), '::jsonb'),
    set('agent_output', toJsonbParam(r.agentOutput), '::jsonb'),
    set('latency_ms', r.latencyMs),
    set('logs', toPostgresText(r.logs)),
    set('error_message', nullIfEmpty(r.errorMessage)),
    set('runtime_snapshot_json', toJsonbParam(r.runtimeSnapshot), '::jsonb'),
    set('inspect_eval_id', nullIfEmpty(r.inspectEvalId)),
    set('inspect_sample_id', nullIfEmpty(r.inspectSampleId)),
    set('usage_json', toJsonbParam(r.usage), '::jsonb'),
    'finished_at = now()',
    'updated_at = now()',
  ];
  if (r.artifacts !== undefined)
    assignments.push(set('artifacts_json', toJsonbParam(r.artifacts), '::jsonb'));
  if (r.inputTokens !== undefined) assignments.push(set('input_tokens', r.inputTokens));
  if (r.outputTokens !== undefined) assignments.push(set('output_tokens', r.outputTokens));
  if (r.startedAt) {
    params.push(r.startedAt);
    assignments.push(`started_at = COALESCE(started_at, $${params.length}::timestamptz)`);
  }
  if (r.scores !== null) {
    // final_score over exactly the rows replaceScores writes below, in this same UPDATE.
    params.push(
      r.scores.map((s) => s.score),
      SENTINEL_SCORE,
    );
    assignments.push(
      `final_score = (SELECT avg(s) FILTER (WHERE s <> $${params.length}) FROM unnest($${params.length - 1}::float8[]) AS s)`,
    );
  }

  return withTransaction(pool, async (client) => {
    const status = await lockExperiment(client, r.experimentId);
    const res = await client.query(
      `UPDATE run_cases SET ${assignments.join(', ')}
        WHERE id = $1 AND experiment_id = $2 AND status = ANY($3::text[])`,
      params,
    );
    const landed = (res.rowCount ?? 0) > 0;
    if (landed) {
      if (r.scores !== null) await replaceScores(client, r.runCaseId, r.scores, { finalScoreSet: true });
      await refreshExperiment(client, r.experimentId, { status });
    }
    await recordTerminalTransitions(client, {
      experimentId: r.experimentId,
      runCaseIds: [r.runCaseId],
      options: events,
    });
    return landed;
  });
}

const scoresInput = z.object({ runCaseId: id, experimentId: id, scores: z.array(caseScore) });

/**
 * The score block of §3.5 alone, for re-scoring a case whose result is already stored. With
 * `onlyTheseScorers`, only the given scorers' rows are replaced and the case's other scores kept
 * (`benchctl rescore --scorer`); final_score is recomputed over all of them either way.
 */
export async function persistCaseScores(
  pool: pg.Pool,
  input: { runCaseId: number; experimentId: number; scores: CaseScore[]; onlyTheseScorers?: boolean },
): Promise<void> {
  const { runCaseId, experimentId, scores } = scoresInput.parse(input);
  const only = input.onlyTheseScorers === true;
  await withTransaction(pool, async (client) => {
    const status = await lockExperiment(client, experimentId);
    const found = await client.query(
      'SELECT 1 FROM run_cases WHERE id = $1 AND experiment_id = $2 FOR UPDATE',
      [runCaseId, experimentId],
    );
    if (found.rowCount === 0)
      throw new Error(`run case ${runCaseId} not found in experiment ${experimentId}`);
    await replaceScores(client, runCaseId, scores, { onlyTheseScorers: only });
    await refreshExperiment(client, experimentId, { status });
  });
}

/**
 * §3.5: delete-then-insert, then final_score. Unlike the original (§13.15) the average leaves out
 * sentinel −1 results, which mean "the judge gave no verdict", not "scored −1"; when every result
 * is a sentinel (or there are none) final_score is NULL rather than −1.
 */
async function replaceScores(
  client: pg.PoolClient,
  runCaseId: number,
  scores: ParsedScore[],
  opts: {
    onlyTheseScorers?: boolean;
    /** The caller's own UPDATE already set final_score from `scores`. */ finalScoreSet?: boolean;
  } = {},
): Promise<void> {
  const onlyTheseScorers = opts.onlyTheseScorers === true;
  // The two tables in one statement each for the delete and the insert (data-modifying CTEs on
  // different tables): a case's final persist is on the critical path of its container slot.
  if (onlyTheseScorers) {
    await client.query(
      `WITH scores AS (DELETE FROM run_case_scores WHERE run_case_id = $1 AND scorer_key = ANY($2::text[]))
       DELETE FROM evaluate_results WHERE run_case_id = $1 AND evaluator_id = ANY($3::bigint[])`,
      [
        runCaseId,
        scores.map((s) => toPostgresText(s.scorerKey)),
        scores.filter((s) => s.evaluatorId > 0).map((s) => s.evaluatorId),
      ],
    );
  } else {
    await client.query(
      `WITH scores AS (DELETE FROM run_case_scores WHERE run_case_id = $1)
       DELETE FROM evaluate_results WHERE run_case_id = $1`,
      [runCaseId],
    );
  }
  await insertScoreRows(
    client,
    runCaseId,
    scores.map((s) => [
      toPostgresText(s.scorerKey),
      s.score,
      toPostgresText(s.reason),
      toJsonbParam(s.rawResult),
    ]),
    scores
      .filter((s) => s.evaluatorId > 0)
      .map((s) => [s.evaluatorId, s.score, toPostgresText(s.reason), toJsonbParam(s.rawResult)]),
  );
  if (opts.finalScoreSet) return;
  await client.query(
    `UPDATE run_cases
        SET final_score = (SELECT avg(score) FILTER (WHERE score <> $2)
                             FROM run_case_scores WHERE run_case_id = $1),
            updated_at = now()
      WHERE id = $1`,
    [runCaseId, SENTINEL_SCORE],
  );
}

type ScoreRow = [unknown, number, string, string | null];

/**
 * run_case_scores rows are [scorer_key, score, reason, raw JSON], evaluate_results rows
 * [evaluator_id, score, reason, raw JSON]; both inserted by one statement.
 */
async function insertScoreRows(
  client: pg.PoolClient,
  runCaseId: number,
  scoreRows: ScoreRow[],
  evaluatorRows: ScoreRow[],
): Promise<void> {
  const params: unknown[] = [runCaseId];
  const values = (rows: ScoreRow[]) =>
    rows
      .map((row) => {
        params.push(...row);
        const p = params.length;
        return `($1, $${p - 3}, $${p - 2}, $${p - 1}, $${p}::jsonb)`;
      })
      .join(', ');
  const insertScores =
    scoreRows.length > 0
      ? `INSERT INTO run_case_scores (run_case_id, scorer_key, score, reason, raw_result_json) VALUES ${values(scoreRows)}`
      : null;
  const insertResults =
    evaluatorRows.length > 0
      ? `INSERT INTO evaluate_results (run_case_id, evaluator_id, score, reason, raw_result) VALUES ${values(evaluatorRows)}`
      : null;
  const statement =
    insertScores && insertResults
      ? `WITH scores AS (${insertScores}) ${insertResults}`
      : (insertScores ?? insertResults);
  if (statement) await client.query(statement, params);
}

const cancelInput = z.object({
  experimentId: id,
  runCaseIds: z.union([z.literal('all'), idList]),
  reason: z.string(),
});

/** Active → canceled with the reason as error_message. Returns the number of rows changed. */
export async function cancelActiveCases(
  pool: pg.Pool,
  input: { experimentId: number; runCaseIds: number[] | 'all'; reason: string },
  events: ResultEventOptions = {},
): Promise<number> {
  const { experimentId, runCaseIds, reason } = cancelInput.parse(input);
  const params: unknown[] = [experimentId, ACTIVE_CASE_STATUSES, toPostgresText(reason)];
  let onlyIds = '';
  if (runCaseIds !== 'all') {
    params.push(runCaseIds);
    onlyIds = ' AND id = ANY($4::bigint[])';
  }
  return withTransaction(pool, async (client) => {
    await lockExperiment(client, experimentId);
    const res = await client.query<{ id: number }>(
      `UPDATE run_cases
          SET status = 'canceled', error_message = $3, finished_at = now(), updated_at = now()
        WHERE experiment_id = $1 AND status = ANY($2::text[])${onlyIds}
       RETURNING id`,
      params,
    );
    await refreshExperiment(client, experimentId);
    await recordTerminalTransitions(client, {
      experimentId,
      runCaseIds: res.rows.map((row) => row.id),
      options: events,
    });
    return res.rowCount ?? 0;
  });
}

/** Current status per run case of the experiment (all of them, or just `runCaseIds`). */
export async function getCaseStatuses(
  pool: pg.Pool,
  experimentId: number,
  runCaseIds?: number[],
): Promise<Map<number, string>> {
  const params: unknown[] = [id.parse(experimentId)];
  let onlyIds = '';
  if (runCaseIds) {
    params.push(idList.parse(runCaseIds));
    onlyIds = ' AND id = ANY($2::bigint[])';
  }
  const { rows } = await pool.query<{ id: unknown; status: string }>(
    `SELECT id, status FROM run_cases WHERE experiment_id = $1${onlyIds}`,
    params,
  );
  return new Map(rows.map((r) => [bigintColumn.parse(r.id), r.status]));
}

export interface SupersededCase {
  oldRunCaseId: number;
  newRunCaseId: number;
  dataItemId: number;
  attemptNo: number;
}

const supersededRow = z.object({
  old_id: bigintColumn,
  new_id: bigintColumn,
  data_item_id: bigintColumn,
  attempt_no: z.number().int(),
});

/**
 * The platform's "retry failed" (§3.3, §3.6): every latest row whose status is exactly `failed`
 * gets a successor (next attempt_no, pending, is_latest) and the experiment is queued again. No
 * refresh here: like the platform, this leaves the experiment `queued` until a run picks it up.
 */
export async function supersedeFailedCases(db: Database, experimentId: number): Promise<SupersededCase[]> {
  const exp = id.parse(experimentId);
  return withTransaction(db, async (client) => {
    await lockExperiment(client, exp);
    const { rows } = await client.query(
      `WITH old AS (
         UPDATE run_cases SET is_latest = FALSE, updated_at = now()
          WHERE experiment_id = $1 AND is_latest = TRUE AND status = 'failed'
         RETURNING id, data_item_id, agent_id
       ), next AS (
         SELECT old.id AS old_id, old.data_item_id, old.agent_id,
                (SELECT max(rc.attempt_no) FROM run_cases rc
                  WHERE rc.experiment_id = $1 AND rc.data_item_id = old.data_item_id) + 1 AS attempt_no
           FROM old
       ), inserted AS (
         INSERT INTO run_cases (experiment_id, data_item_id, agent_id, attempt_no, is_latest, status)
         SELECT $1, data_item_id, agent_id, attempt_no, TRUE, 'pending' FROM next
         RETURNING id, data_item_id
       )
       SELECT next.old_id, inserted.id AS new_id, next.data_item_id, next.attempt_no
         FROM next JOIN inserted ON inserted.data_item_id = next.data_item_id
        ORDER BY next.old_id`,
      [exp],
    );
    if (rows.length === 0) return [];
    await client.query(
      `UPDATE experiments
          SET queue_status = 'queued', queued_at = now(), queue_message_id = NULL,
              started_at = NULL, finished_at = NULL, updated_at = now()
        WHERE id = $1`,
      [exp],
    );
    return rows.map((raw) => {
      const r = supersededRow.parse(raw);
      return {
        oldRunCaseId: r.old_id,
        newRunCaseId: r.new_id,
        dataItemId: r.data_item_id,
        attemptNo: r.attempt_no,
      };
    });
  });
}
