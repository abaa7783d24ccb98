import { errorText } from '../domain/errors';

/** `benchctl run`, `rerun` and scripts/setup could not find, start or reach the local Temporal dev server. */
export class DevServerError extends Error {
  constructor(
    message: string,
    /** `no-binary` lets scripts/setup build the CLI with go install and try again. */
    readonly reason: 'not-loopback' | 'no-binary' | 'start-failed' | 'not-ready',
  ) {
    super(message);
    this.name = 'DevServerError';
  }
}

/** A search attribute we need is registered with another type: our queries and upserts would fail against it. */
export class SearchAttributeTypeError extends Error {
  readonly code = 'E_SEARCH_ATTRIBUTE_TYPE';
  constructor(readonly conflicts: Array<{ name: string; want: string; wantCode: number; have: number }>) {
    super(
      `E_SEARCH_ATTRIBUTE_TYPE: ${conflicts
        .map((c) => `${c.name} is registered as type ${c.have}, not ${c.want} (${c.wantCode})`)
        .join('; ')}; remove it (temporal operator search-attribute remove) or use another namespace`,
    );
    this.name = 'SearchAttributeTypeError';
  }
}

/** A Temporal call that failed for want of an answer (server away, network): callers may say "retry". */
export class TemporalUnavailableError extends Error {
  override name = 'TemporalUnavailableError';
  constructor(cause: unknown) {
    super(`Temporal does not answer: ${errorText(cause)}`, { cause });
  }
}
