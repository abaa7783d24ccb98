import { errorText, PermanentError } from '../domain/errors';

/** Docker daemon/infrastructure failure (daemon unreachable, pull, create, start, OOM kill): worth retrying. */
export class DockerInfraError extends Error {
  readonly code: string;
  constructor(code: string, detail: string, options?: { cause?: unknown }) {
    super(`${code}: ${detail}`, options);
    this.name = 'DockerInfraError';
    this.code = code;
  }
}

/** The caller handed us an invalid container spec (a bug or a bad runtime spec, never transient). */
export class SandboxSpecError extends PermanentError {
  readonly code = 'E_SANDBOX_RUNTIME_SPEC_INVALID';
  constructor(detail: string) {
    super(`E_SANDBOX_RUNTIME_SPEC_INVALID: ${detail}`);
    this.name = 'SandboxSpecError';
  }
}

/** The HTTP status the daemon answered with, when the error is a daemon answer. */
export function statusCode(err: unknown): number | undefined {
  const code = (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof code === 'number' ? code : undefined;
}

/** The daemon's own message when there is one ("No such image: …"), else the client error. */
export function errorDetail(err: unknown): string {
  const json = (err as { json?: { message?: unknown } } | null)?.json;
  if (typeof json?.message === 'string' && json.message) return json.message.trim();
  return errorText(err).trim();
}

/**
 * A Docker call that did not answer within its deadline (a hung or overloaded daemon). Infrastructure
 * like any DockerInfraError, so the attempt is retried; the codes are the original's
 * (`E_DOCKER_RUN_TIMEOUT`, `E_DOCKER_INSPECT_TIMEOUT`, `E_DOCKER_IMAGE_INSPECT_TIMEOUT`, …).
 */
export class DockerTimeoutError extends DockerInfraError {
  constructor(code: string, what: string, timeoutMs: number) {
    super(code, `${what} did not answer within ${timeoutMs} ms`);
    this.name = 'DockerTimeoutError';
  }
}

/**
 * `call` with a deadline: rejects with DockerTimeoutError(code) once timeoutMs pass. The request
 * itself is not aborted (most dockerode calls take no signal); what it does later is harmless to
 * callers that handle a late effect anyway (a late create is a leftover the next create removes).
 */
export async function withDockerDeadline<T>(
  call: () => Promise<T>,
  timeoutMs: number,
  code: string,
  what: string,
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DockerTimeoutError(code, what, timeoutMs)), timeoutMs);
  });
  const pending = call();
  // A call that fails after its deadline must not become an unhandled rejection.
  pending.catch(() => undefined);
  try {
    return await Promise.race([pending, deadline]);
  } finally {
    clearTimeout(timer);
  }
}
