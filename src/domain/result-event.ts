/**
 * Result events for downstream services (contracts/run_case.finished.v1.schema.json and
 * contracts/experiment_run.finished.v1.schema.json). Versioned like the request message: a
 * `message_type` that is also the AMQP routing key, and a `schema_version`. Pure.
 */
import type { CaseStatus } from './case-status';
import type { RunCaseCounts, RunStatus } from './run-status';

const RESULT_EVENT_SCHEMA_VERSION = 'v1';
export const RESULT_EVENT_TYPES = ['run_case.finished', 'experiment_run.finished'] as const;
export type ResultEventType = (typeof RESULT_EVENT_TYPES)[number];
const RESULT_EVENT_SERVICE = 'agentbench-orchestrator';

/** The run a case event belongs to: its id is the workflow id (the API's run_id). */
export interface ResultEventRun {
  id: string;
  workflow_id: string;
}

export interface CaseFinishedPayload {
  experiment: { id: number };
  /** null when the case was closed outside of any run (e.g. an operator's bulk cancel). */
  run: ResultEventRun | null;
  run_case: {
    id: number;
    data_item_id: number;
    attempt_no: number;
    status: Extract<CaseStatus, 'success' | 'failed' | 'timeout' | 'canceled'>;
    error_code: string | null;
    error_message: string | null;
    final_score: number | null;
    latency_ms: number | null;
    started_at: string | null;
    finished_at: string | null;
    scores: Array<{ scorer_key: string; score: number }>;
  };
}

export interface RunFinishedPayload {
  experiment: { id: number };
  run: ResultEventRun & {
    status: Exclude<RunStatus, 'queued' | 'running'>;
    /** Why a run ended without running its cases (skipped), else null. */
    reason: string | null;
    started_at: string | null;
    finished_at: string;
    cases: Pick<RunCaseCounts, 'total' | 'success' | 'failed' | 'timeout' | 'canceled'> & {
      /** Cases left active (only a skipped run has any). */
      unfinished: number;
    };
  };
}

export interface StoredResultEvent {
  eventId: string;
  eventType: ResultEventType;
  /** When the terminal transition was recorded (the outbox row's creation). */
  createdAt: Date;
  payload: CaseFinishedPayload | RunFinishedPayload;
}

/**
 * The message body of a stored event. Built from stored values only, so relaying the same row
 * twice sends the same bytes (consumers deduplicate by `event_id`).
 */
export function resultEventMessage(event: StoredResultEvent, source: { deploymentId: string }): object {
  return {
    message_type: event.eventType,
    schema_version: RESULT_EVENT_SCHEMA_VERSION,
    event_id: event.eventId,
    produced_at: event.createdAt.toISOString(),
    source: { service: RESULT_EVENT_SERVICE, deployment_id: source.deploymentId },
    ...event.payload,
  };
}
