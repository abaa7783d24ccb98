import type pg from 'pg';
import { z } from 'zod';
import { ACTIVE_CASE_STATUSES, TERMINAL_CASE_STATUSES } from '../domain/case-status';
import {
  RESULT_EVENT_TYPES,
  type ResultEventType,
  type RunFinishedPayload,
  type StoredResultEvent,
} from '../domain/result-event';
import { endedRunStatus, finishedCases } from '../domain/run-status';
import { lockExperiment, withTransaction } from './experiment-repository';
import { utcText } from './postgres-text';
import { runCaseCounts } from './run-view-repository';

/**
 * The outbox of result events (migration 005). Every function that moves run cases into a terminal
 * status calls `recordTerminalTransitions` in its own transaction, after its UPDATE: one
 * `run_case.finished` row per case that is terminal now, and — once the run has no active case
 * left — the run's `experiment_run.finished`. Rows are unique per (event type, subject), so each
 * terminal transition yields exactly one event whichever path (finalize, fast path, cancel, a failed
 * start, a reconciler) gets there first, and a retried transaction adds none. The relay publishes
 * them later (src/result-events/result-event-relay.ts).
 */

/** How a terminal write records its result events; the repository functions take it as is. */
export interface ResultEventOptions {
  /** false: record none (RESULT_EVENTS_ENABLED=false). Default true. */
  resultEvents?: boolean;
  /**
   * The run (workflow id) the write belongs to: its case events carry it, and the run's own event is
   * recorded when the run has no active case left. Without it only case events are recorded.
   */
  workflowId?: string;
}

const ACTIVE = [...ACTIVE_CASE_STATUSES];
const TERMINAL = [...TERMINAL_CASE_STATUSES];
const ERROR_MESSAGE_LIMIT = 2000;

/**
 * The `run_case.finished` payload of run_cases row `rc`, frozen at the transition (a later rescore
 * does not change an event already recorded). `runParam` is the SQL of the run's workflow id.
 */
function casePayloadSql(runParam: string): string {
  return `jsonb_build_object(
    'experiment', jsonb_build_object('id', rc.experiment_id),
    'run', CASE WHEN ${runParam}::text IS NULL THEN NULL
                ELSE jsonb_build_object('id', ${runParam}::text, 'workflow_id', ${runParam}::text) END,
    'run_case', jsonb_build_object(
      'id', rc.id, 'data_item_id', rc.data_item_id, 'attempt_no', rc.attempt_no, 'status', rc.status,
      'error_code', substring(rc.error_message from '^(E_[A-Z0-9_]+)'),
      'error_message', left(rc.error_message, ${ERROR_MESSAGE_LIMIT}),
      'final_score', rc.final_score, 'latency_ms', rc.latency_ms,
      'started_at', ${utcText('rc.started_at')}, 'finished_at', ${utcText('rc.finished_at')},
      'scores', COALESCE((SELECT jsonb_agg(jsonb_build_object('scorer_key', s.scorer_key, 'score', s.score)
                                           ORDER BY s.scorer_key, s.id)
                            FROM run_case_scores s WHERE s.run_case_id = rc.id), '[]'::jsonb)))`;
}

const INSERT_COLUMNS =
  'INSERT INTO agentbench_result_events (event_type, subject, experiment_id, workflow_id, payload)';

/**
 * In the caller's transaction, which holds the experiment lock (every terminal writer takes it, so
 * two cases of one run finishing at once see each other and exactly one of them closes the run).
 * Records the events of `runCaseIds` that are terminal now, then, with a workflow id, closes the run
 * if none of its cases is active any more. Returns whether this call closed the run.
 */
export async function recordTerminalTransitions(
  client: pg.PoolClient,
  p: { experimentId: number; runCaseIds: number[]; options: ResultEventOptions },
): Promise<boolean> {
  if (p.options.resultEvents === false) return false;
  const workflowId = p.options.workflowId ?? null;
  // One round trip on the per-case path: the case events, whether the run still has an active case
  // (through the (experiment_id, is_latest, status) index: its first hit is nearly always one of
  // this run's), and whether the run's event exists.
  const { rows } = await client.query<{ active: boolean; closed: boolean }>(
    `WITH recorded AS (
       ${INSERT_COLUMNS}
       SELECT 'run_case.finished', rc.id::text, rc.experiment_id, $2::text, ${casePayloadSql('$2')}
         FROM run_cases rc WHERE rc.id = ANY($1::bigint[]) AND rc.status = ANY($3::text[])
       ON CONFLICT (event_type, subject) DO NOTHING
       RETURNING 1
     )
     SELECT $2::text IS NOT NULL AND EXISTS (
              SELECT 1 FROM run_cases rc
               WHERE rc.experiment_id = $4 AND rc.is_latest = TRUE AND rc.status = ANY($5::text[])
                 AND EXISTS (SELECT 1 FROM agentbench_case_inputs ci WHERE ci.workflow_id = $2 AND ci.run_case_id = rc.id)
            ) AS active,
            $2::text IS NULL OR EXISTS (
              SELECT 1 FROM agentbench_result_events WHERE event_type = 'experiment_run.finished' AND subject = $2
            ) AS closed`,
    [p.runCaseIds, workflowId, TERMINAL, p.experimentId, ACTIVE],
  );
  const row = rows[0];
  if (!workflowId || !row || row.active || row.closed) return false;
  return closeRun(client, { workflowId, experimentId: p.experimentId, reason: null });
}

/**
 * Records the run's end: first a `run_case.finished` for each of its terminal cases that has none yet
 * (cases the platform canceled itself never passed through our writes), then `experiment_run.finished`.
 * `reason` marks a run that ended without running its cases (skipped). Idempotent.
 */
async function closeRun(
  client: pg.PoolClient,
  p: { workflowId: string; experimentId: number; reason: string | null },
): Promise<boolean> {
  await client.query(
    `${INSERT_COLUMNS}
     SELECT 'run_case.finished', rc.id::text, rc.experiment_id, $1::text, ${casePayloadSql('$1')}
       FROM agentbench_case_inputs ci JOIN run_cases rc ON rc.id = ci.run_case_id
      WHERE ci.workflow_id = $1 AND rc.status = ANY($2::text[])
      ORDER BY ci.position
     ON CONFLICT (event_type, subject) DO NOTHING`,
    [p.workflowId, TERMINAL],
  );
  const counts = await runCaseCounts(client, p.workflowId);
  const { rows: now } = await client.query<{ now: string }>(`SELECT ${utcText('now()')} AS now`);
  const payload: RunFinishedPayload = {
    experiment: { id: p.experimentId },
    run: {
      id: p.workflowId,
      workflow_id: p.workflowId,
      status: p.reason === null ? endedRunStatus(counts) : 'canceled',
      reason: p.reason,
      started_at: counts.startedAt,
      finished_at: now[0]?.now ?? new Date().toISOString(),
      cases: {
        total: counts.total,
        success: counts.success,
        failed: counts.failed,
        timeout: counts.timeout,
        canceled: counts.canceled,
        unfinished: counts.total - finishedCases(counts),
      },
    },
  };
  const r = await client.query(
    `${INSERT_COLUMNS} VALUES ('experiment_run.finished', $1, $2, $1, $3::jsonb)
     ON CONFLICT (event_type, subject) DO NOTHING`,
    [p.workflowId, p.experimentId, JSON.stringify(payload)],
  );
  return (r.rowCount ?? 0) > 0;
}

/**
 * For a run that ends without a terminal write of its own: a skipped run (`reason` says why; its
 * cases stay as they are), or a run whose last cases were closed by someone else (the platform's
 * terminate). Closes the run when `reason` is set or when none of its cases is active. Idempotent.
 */
export async function recordRunEnd(
  pool: pg.Pool,
  p: {
    workflowId: string;
    experimentId: number;
    reason?: string;
    /** Cases found closed: their events are recorded now rather than when the run closes. */
    runCaseIds?: number[];
    resultEvents?: boolean;
  },
): Promise<boolean> {
  if (p.resultEvents === false) return false;
  return withTransaction(pool, async (client) => {
    await lockExperiment(client, p.experimentId);
    if (p.reason === undefined) {
      return recordTerminalTransitions(client, {
        experimentId: p.experimentId,
        runCaseIds: p.runCaseIds ?? [],
        options: { workflowId: p.workflowId },
      });
    }
    return closeRun(client, { workflowId: p.workflowId, experimentId: p.experimentId, reason: p.reason });
  });
}

const pendingRow = z.object({
  seq: z.number(),
  event_id: z.string(),
  event_type: z.enum(RESULT_EVENT_TYPES),
  created_at: z.date(),
  payload: z.record(z.string(), z.unknown()),
});

export interface PendingResultEvent extends StoredResultEvent {
  seq: number;
}

/**
 * The relay's unit of work: up to `limit` unpublished events, oldest first, locked for this
 * transaction (other relays skip them). `publish` sends them and resolves once the broker confirmed
 * every one; only then are they marked published, in the same transaction. If it throws, nothing
 * is marked and the events go out again later (at least once).
 */
export async function relayPendingEvents(
  pool: pg.Pool,
  limit: number,
  publish: (events: PendingResultEvent[]) => Promise<void>,
): Promise<number> {
  return withTransaction(pool, async (client) => {
    const { rows } = await client.query(
      `SELECT seq, event_id::text AS event_id, event_type, created_at, payload
         FROM agentbench_result_events
        WHERE published_at IS NULL
        ORDER BY seq
        LIMIT $1
        FOR UPDATE SKIP LOCKED`,
      [limit],
    );
    if (rows.length === 0) return 0;
    const events: PendingResultEvent[] = rows.map((raw) => {
      const r = pendingRow.parse(raw);
      return {
        seq: r.seq,
        eventId: r.event_id,
        eventType: r.event_type as ResultEventType,
        createdAt: r.created_at,
        payload: r.payload as unknown as StoredResultEvent['payload'],
      };
    });
    await publish(events);
    await client.query(
      'UPDATE agentbench_result_events SET published_at = now() WHERE seq = ANY($1::bigint[])',
      [events.map((e) => e.seq)],
    );
    return events.length;
  });
}

/** Unpublished events (a gauge: grows while the broker is away). */
export async function countPendingEvents(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM agentbench_result_events WHERE published_at IS NULL',
  );
  return rows[0]?.n ?? 0;
}

/** Deletes events published more than `days` ago; unpublished ones are never deleted. */
export async function prunePublishedEvents(pool: pg.Pool, days: number): Promise<number> {
  const r = await pool.query(
    `DELETE FROM agentbench_result_events
      WHERE published_at IS NOT NULL AND published_at < now() - make_interval(days => $1::int)`,
    [days],
  );
  return r.rowCount ?? 0;
}
