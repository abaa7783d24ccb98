import { PermanentError } from '../domain/errors';

/**
 * A run's stored request or one of its case inputs is not there: the run was never stored by this
 * deployment (or its rows were deleted). No retry brings it back.
 */
export class MissingRunRequestError extends PermanentError {
  readonly code = 'E_RUN_REQUEST_MISSING';
  constructor(detail: string) {
    super(`E_RUN_REQUEST_MISSING: ${detail}`);
    this.name = 'MissingRunRequestError';
  }
}

/**
 * A message names an experiment, or run cases of it, that the platform's tables do not have: it was
 * published for another database or its rows are gone. Starting it would only cancel every case.
 */
export class MessageRowsMissingError extends PermanentError {
  constructor(
    readonly code: 'E_EXPERIMENT_NOT_FOUND' | 'E_RUN_CASE_NOT_FOUND',
    detail: string,
  ) {
    super(`${code}: ${detail}`);
    this.name = 'MessageRowsMissingError';
  }
}

/**
 * SQLSTATE classes no retry can cure: 22 data exception (a value the column cannot hold), 23
 * integrity constraint violation, 42 syntax error or access rule violation (a missing table or
 * column, a bad statement). Everything else — connection failures (08), an administrator shutdown
 * (57P), too many connections (53), serialization failures (40) and errors without a SQLSTATE (a
 * socket gone, a pool timeout) — may pass and is retried.
 */
const PERMANENT_SQLSTATE_CLASSES = new Set(['22', '23', '42']);

/** A Postgres error whose SQLSTATE says retrying cannot help. */
export function isPermanentDatabaseError(err: unknown): boolean {
  if (typeof err !== 'object' || err === null || !('code' in err)) return false;
  const { code } = err as { code: unknown };
  // node-postgres sets `code` to the SQLSTATE (five characters); socket errors carry E-codes.
  return (
    typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && PERMANENT_SQLSTATE_CLASSES.has(code.slice(0, 2))
  );
}

/** A permanent database error met by a case phase: the case fails with this code, the run goes on. */
export class PermanentDatabaseError extends PermanentError {
  readonly code = 'E_CASE_PERSIST_FAILED';
  constructor(cause: unknown) {
    const sqlstate = (cause as { code?: string }).code ?? 'unknown';
    super(
      `E_CASE_PERSIST_FAILED: database error ${sqlstate}: ${cause instanceof Error ? cause.message : String(cause)}`,
    );
    this.name = 'PermanentDatabaseError';
  }
}
