/**
 * What every layer needs of errors: their text, and whether retrying can help. Pure (workflows and
 * activities use it alike).
 */

/**
 * An error retrying cannot cure: bad input, a missing record, a bug. Carries its CONTRACT.md code;
 * the activity boundary hands it to Temporal as a non-retryable failure of that type, so the case
 * fails at once instead of spending its attempts on the same answer.
 */
export abstract class PermanentError extends Error {
  abstract readonly code: string;
}

/** The message of a thrown value, whatever was thrown. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The stack of a thrown value when it has one (for a process's last words on stderr), else its text. */
export function errorStackText(err: unknown): string {
  return err instanceof Error ? (err.stack ?? err.message) : String(err);
}

/** The text of the innermost cause: a Temporal ActivityFailure wraps the error that was thrown. */
export function rootCauseText(err: unknown): string {
  let e: unknown = err;
  while (e instanceof Error && e.cause instanceof Error) e = e.cause;
  return errorText(e);
}
