import { ApplicationFailure } from '@temporalio/common';
import { isPermanentDatabaseError, PermanentDatabaseError } from '../src/db/errors';
import { PermanentError } from '../src/domain/errors';

/**
 * How an error leaves an activity. A PermanentError (a bad spec, a missing record) becomes a
 * non-retryable ApplicationFailure whose type is its CONTRACT code: Temporal fails the activity
 * at once instead of retrying what cannot change. Everything else is left to the retry policy.
 */
function toActivityFailure(err: unknown): unknown {
  if (!(err instanceof PermanentError)) return err;
  return ApplicationFailure.create({ message: err.message, type: err.code, nonRetryable: true, cause: err });
}

/** `fn` as an activity: its errors leave through toActivityFailure. */
export function activity<Args extends unknown[], R>(
  fn: (...args: Args) => Promise<R>,
): (...args: Args) => Promise<R> {
  return async (...args) => {
    try {
      return await fn(...args);
    } catch (err) {
      throw toActivityFailure(err);
    }
  };
}

/**
 * `fn` as one of a case's phase activities: like activity(), and a database error retrying cannot
 * cure (SQLSTATE class 22/23/42) fails the attempt for good with E_CASE_PERSIST_FAILED, so the
 * workflow ends the case failed and goes on instead of retrying the same statement forever. Only
 * case phases: the workflow handles their failures per case; a run-level activity failing for good
 * would fail the whole run.
 */
export function caseActivity<Args extends unknown[], R>(
  fn: (...args: Args) => Promise<R>,
): (...args: Args) => Promise<R> {
  return activity(async (...args: Args) => {
    try {
      return await fn(...args);
    } catch (err) {
      throw isPermanentDatabaseError(err) ? new PermanentDatabaseError(err) : err;
    }
  });
}
