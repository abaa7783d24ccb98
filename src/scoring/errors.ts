import { RETRYABLE_JUDGE_STATUSES } from '../domain/judge-score';

/**
 * Failures of the LLM judge's HTTP call (llm-judge-client). Their names are those of the Python
 * `requests` exceptions the original raised, because the class name ends up in stored score reasons
 * (`E_SCORE_DEFAULT_EVALUATOR_CALL_FAILED: ReadTimeout`) next to rows the original wrote.
 */
export abstract class JudgeCallError extends Error {
  abstract readonly retryable: boolean;
}

/** A non-2xx status (after the retries it allows). */
export class HTTPError extends JudgeCallError {
  override readonly name = 'HTTPError';
  readonly retryable: boolean;
  constructor(
    readonly status: number,
    bodyExcerpt: string,
  ) {
    super(`HTTP ${status}${bodyExcerpt ? `: ${bodyExcerpt}` : ''}`);
    this.retryable = RETRYABLE_JUDGE_STATUSES.has(status);
  }
}

export class ConnectTimeout extends JudgeCallError {
  override readonly name = 'ConnectTimeout';
  readonly retryable = true;
}

/** No response headers, or a body stalled, for longer than the read timeout. */
export class ReadTimeout extends JudgeCallError {
  override readonly name = 'ReadTimeout';
  readonly retryable = true;
}

/** Refused, reset, unreachable, DNS failure. */
export class ConnectionError extends JudgeCallError {
  override readonly name = 'ConnectionError';
  readonly retryable = true;
}

/** A 2xx response whose body is not JSON. */
export class JSONDecodeError extends JudgeCallError {
  override readonly name = 'JSONDecodeError';
  readonly retryable = false;
}

export class InvalidURL extends JudgeCallError {
  override readonly name = 'InvalidURL';
  readonly retryable = false;
}

/** A scorer ran past CONSUMER_SCORER_HARD_TIMEOUT_SECONDS (its name is what the score reason shows). */
export class ScorerHardTimeout extends Error {
  override readonly name = 'ScorerHardTimeout';
}

/** `benchctl rescore` was pointed at an experiment, or an evaluator of it, that does not exist. */
export class RescoreTargetError extends Error {
  override readonly name = 'RescoreTargetError';
}
