import type pg from 'pg';
import type { RunCaseInput } from '../src/domain/message';
import type { LoadedRunRequest } from '../src/db/run-request-cache';
import type { Logger } from '../src/logger';

/**
 * What every activity family reads and writes through: the platform's Postgres (with the
 * repositories of src/db; tests use the real thing) and the worker's logger. Each family adds
 * the few collaborators it uses to this, in its own module; src/temporal/case-worker.ts wires them.
 */
export interface DatabaseDeps {
  log: Logger;
  pool: pg.Pool;
  /**
   * RESULT_EVENTS_ENABLED: terminal writes record their result events in the outbox (same
   * transaction, src/db/result-event-outbox.ts). Absent = true.
   */
  resultEvents?: boolean;
}

/** A run's stored request, its runtime spec resolved (src/db/run-request-cache). */
export interface RunRequests {
  get(workflowId: string): Promise<LoadedRunRequest>;
  caseInput(workflowId: string, runCaseId: number): Promise<RunCaseInput>;
  /** The run is over in this worker: its entry may go. */
  forget(workflowId: string): void;
}
