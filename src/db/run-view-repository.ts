import type pg from 'pg';
import { z } from 'zod';
import { CASE_STATUSES, type CaseStatus } from '../domain/case-status';
import { emptyRunCaseCounts, type RunCaseCounts } from '../domain/run-status';
import type { Database } from './experiment-repository';
import { utcText } from './postgres-text';

/**
 * Read views of one run (a workflow and exactly the run cases of its message, through
 * agentbench_case_inputs): what the HTTP API and `benchctl status` show. Read-only.
 */

const bigintColumn = z.coerce.number().int();

const countsRow = z.object({
  total: z.number(),
  pending: z.number(),
  queued: z.number(),
  running: z.number(),
  trajectory: z.number(),
  scoring: z.number(),
  success: z.number(),
  failed: z.number(),
  timeout: z.number(),
  canceled: z.number(),
  started_at: z.string().nullable(),
});

const COUNTS_SELECT = `count(*)::int AS total,
            (count(*) FILTER (WHERE rc.status = 'pending'))::int AS pending,
            (count(*) FILTER (WHERE rc.status = 'queued'))::int AS queued,
            (count(*) FILTER (WHERE rc.status = 'running'))::int AS running,
            (count(*) FILTER (WHERE rc.status = 'trajectory'))::int AS trajectory,
            (count(*) FILTER (WHERE rc.status = 'scoring'))::int AS scoring,
            (count(*) FILTER (WHERE rc.status = 'success'))::int AS success,
            (count(*) FILTER (WHERE rc.status = 'failed'))::int AS failed,
            (count(*) FILTER (WHERE rc.status = 'timeout'))::int AS timeout,
            (count(*) FILTER (WHERE rc.status = 'canceled'))::int AS canceled,
            ${utcText('min(rc.started_at)')} AS started_at`;

export type RunCounts = RunCaseCounts & { startedAt: string | null };

function toCounts(raw: unknown): RunCounts {
  const { started_at: startedAt, ...counts } = countsRow.parse(raw);
  return { ...counts, startedAt };
}

/** Per-status counts of one run's cases, and when its first case started. */
export async function runCaseCounts(db: Database, workflowId: string): Promise<RunCounts> {
  const { rows } = await db.query(
    `SELECT ${COUNTS_SELECT}
       FROM agentbench_case_inputs ci JOIN run_cases rc ON rc.id = ci.run_case_id
      WHERE ci.workflow_id = $1`,
    [workflowId],
  );
  return toCounts(rows[0]);
}

/** The same for several runs in one query (a page of the run list). */
export async function runCaseCountsByRun(
  pool: pg.Pool,
  workflowIds: string[],
): Promise<Map<string, RunCounts>> {
  const { rows } = await pool.query<{ workflow_id: string }>(
    `SELECT ci.workflow_id, ${COUNTS_SELECT}
       FROM agentbench_case_inputs ci JOIN run_cases rc ON rc.id = ci.run_case_id
      WHERE ci.workflow_id = ANY($1::text[])
      GROUP BY ci.workflow_id`,
    [workflowIds],
  );
  const byRun = new Map(rows.map((r) => [r.workflow_id, toCounts(r)]));
  for (const id of workflowIds)
    if (!byRun.has(id)) byRun.set(id, { ...emptyRunCaseCounts(), startedAt: null });
  return byRun;
}

export interface RunRecord {
  workflowId: string;
  experimentId: number;
  messageId: string;
  createdAt: Date;
}

const runRecordRow = z.object({
  workflow_id: z.string(),
  experiment_id: bigintColumn,
  message_id: z.string(),
  created_at: z.date(),
});

const toRunRecord = (raw: unknown): RunRecord => {
  const r = runRecordRow.parse(raw);
  return {
    workflowId: r.workflow_id,
    experimentId: r.experiment_id,
    messageId: r.message_id,
    createdAt: r.created_at,
  };
};

/** The stored run (agentbench_run_requests) without its request body; null when there is none. */
export async function getRunRecord(pool: pg.Pool, workflowId: string): Promise<RunRecord | null> {
  const { rows } = await pool.query(
    'SELECT workflow_id, experiment_id, message_id, created_at FROM agentbench_run_requests WHERE workflow_id = $1',
    [workflowId],
  );
  return rows[0] ? toRunRecord(rows[0]) : null;
}

/** Keyset position in the run list (newest first). */
export interface RunListCursor {
  createdAt: Date;
  workflowId: string;
}

/** Runs newest first, optionally of one experiment, strictly after `after`. */
export async function listRunRecords(
  pool: pg.Pool,
  p: { experimentId?: number; limit: number; after?: RunListCursor },
): Promise<RunRecord[]> {
  const params: unknown[] = [p.limit];
  const where: string[] = [];
  if (p.experimentId !== undefined) {
    params.push(p.experimentId);
    where.push(`experiment_id = $${params.length}`);
  }
  if (p.after) {
    params.push(p.after.createdAt, p.after.workflowId);
    where.push(`(created_at, workflow_id) < ($${params.length - 1}::timestamptz, $${params.length})`);
  }
  const { rows } = await pool.query(
    `SELECT workflow_id, experiment_id, message_id, created_at FROM agentbench_run_requests
      ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY created_at DESC, workflow_id DESC
      LIMIT $1`,
    params,
  );
  return rows.map(toRunRecord);
}

interface RunCaseView {
  /** Order of the case in its run (1-based): the page cursor. */
  position: number;
  runCaseId: number;
  dataItemId: number;
  attemptNo: number;
  status: CaseStatus;
  output: unknown;
  errorMessage: string | null;
  finalScore: number | null;
  latencyMs: number | null;
  startedAt: string | null;
  finishedAt: string | null;
  scores: Array<{ scorer_key: string; score: number; reason: string }>;
}

const caseRow = z.object({
  position: z.number(),
  run_case_id: bigintColumn,
  data_item_id: bigintColumn,
  attempt_no: z.number(),
  status: z.enum(CASE_STATUSES),
  agent_output: z.unknown(),
  error_message: z.string().nullable(),
  final_score: z.number().nullable(),
  latency_ms: bigintColumn.nullable(),
  started_at: z.string().nullable(),
  finished_at: z.string().nullable(),
  scores: z.array(z.object({ scorer_key: z.string(), score: z.number(), reason: z.string() })),
});

/** A keyset page of the run's cases in message order, positions after `afterPosition`, optionally by status. */
export async function listRunCases(
  pool: pg.Pool,
  p: { workflowId: string; afterPosition: number; limit: number; statuses?: readonly CaseStatus[] },
): Promise<RunCaseView[]> {
  const params: unknown[] = [p.workflowId, p.afterPosition, p.limit];
  let statusFilter = '';
  if (p.statuses && p.statuses.length > 0) {
    params.push(p.statuses);
    statusFilter = ` AND rc.status = ANY($${params.length}::text[])`;
  }
  const { rows } = await pool.query(
    `SELECT ci.position, rc.id AS run_case_id, rc.data_item_id, rc.attempt_no, rc.status, rc.agent_output,
            rc.error_message, rc.final_score, rc.latency_ms,
            ${utcText('rc.started_at')} AS started_at, ${utcText('rc.finished_at')} AS finished_at,
            COALESCE((SELECT jsonb_agg(jsonb_build_object('scorer_key', s.scorer_key, 'score', s.score, 'reason', s.reason)
                                       ORDER BY s.scorer_key, s.id)
                        FROM run_case_scores s WHERE s.run_case_id = rc.id), '[]'::jsonb) AS scores
       FROM agentbench_case_inputs ci JOIN run_cases rc ON rc.id = ci.run_case_id
      WHERE ci.workflow_id = $1 AND ci.position > $2${statusFilter}
      ORDER BY ci.position
      LIMIT $3`,
    params,
  );
  return rows.map((raw) => {
    const r = caseRow.parse(raw);
    return {
      position: r.position,
      runCaseId: r.run_case_id,
      dataItemId: r.data_item_id,
      attemptNo: r.attempt_no,
      status: r.status,
      output: r.agent_output,
      errorMessage: r.error_message,
      finalScore: r.final_score,
      latencyMs: r.latency_ms,
      startedAt: r.started_at,
      finishedAt: r.finished_at,
      scores: r.scores,
    };
  });
}

export interface RunCaseState {
  runCaseId: number;
  position: number;
  status: CaseStatus;
  errorMessage: string | null;
  finalScore: number | null;
  updatedAt: Date;
}

const stateRow = z.object({
  run_case_id: bigintColumn,
  position: z.number(),
  status: z.enum(CASE_STATUSES),
  error_message: z.string().nullable(),
  final_score: z.number().nullable(),
  updated_at: z.date(),
});

/**
 * The status of each case of the run written at or after `since` (all of them without): what an
 * event stream compares with what it already sent.
 */
export async function runCaseStates(
  pool: pg.Pool,
  workflowId: string,
  since?: Date,
): Promise<RunCaseState[]> {
  const params: unknown[] = [workflowId];
  let sinceFilter = '';
  if (since) {
    params.push(since);
    sinceFilter = ' AND rc.updated_at >= $2';
  }
  const { rows } = await pool.query(
    `SELECT rc.id AS run_case_id, ci.position, rc.status, left(rc.error_message, 2000) AS error_message,
            rc.final_score, rc.updated_at
       FROM agentbench_case_inputs ci JOIN run_cases rc ON rc.id = ci.run_case_id
      WHERE ci.workflow_id = $1${sinceFilter}
      ORDER BY rc.updated_at, ci.position`,
    params,
  );
  return rows.map((raw) => {
    const r = stateRow.parse(raw);
    return {
      runCaseId: r.run_case_id,
      position: r.position,
      status: r.status,
      errorMessage: r.error_message,
      finalScore: r.final_score,
      updatedAt: r.updated_at,
    };
  });
}
