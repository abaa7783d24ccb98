import { isGrpcServiceError } from '@temporalio/client';
import pg from 'pg';
import { errorText, PermanentError } from '../domain/errors';

/**
 * Whether a failed run start (stored request + workflow start) can succeed on a later try. A
 * permanent failure answers the same for this message every time — retrying it only circles it
 * through the bridge and holds a prefetch slot — so it is dead-lettered at once under `code`.
 */
export type StartFailure =
  { kind: 'permanent'; code: string; error: string } | { kind: 'transient'; error: string };

/** Temporal refused the message's start as such (id too long, memo or search attribute too large, …). */
const START_REJECTED = 'E_WORKFLOW_START_REJECTED';
/** Postgres refused to store the message's request (a value too long, out of range, …). */
const REQUEST_REJECTED = 'E_RUN_REQUEST_REJECTED';

/** gRPC status codes (fixed by the gRPC spec; @grpc/grpc-js is not a dependency of ours). */
const INVALID_ARGUMENT = 3;
const RESOURCE_EXHAUSTED = 8;
const OUT_OF_RANGE = 11;
const MESSAGE_CODES = new Set([INVALID_ARGUMENT, RESOURCE_EXHAUSTED, OUT_OF_RANGE]);

/**
 * Said of every message alike (a search attribute not registered, a namespace missing), so it is
 * the deployment's fault, not the message's: dead-lettering at once would empty the queue into the
 * dead-letter queue; as transient it is bounded by the attempt limit and alerts meanwhile.
 * (Auth, NOT_FOUND and FAILED_PRECONDITION answers are transient for the same reason.)
 */
const DEPLOYMENT_WIDE = /is not defined|no mapping defined|namespace/i;

/**
 * SQLSTATE classes about the message's data (22 data exception: a value too long, out of range, a
 * NUL byte; 23 integrity constraint). Others can pass or are the deployment's (42P01: migrations
 * missing, 42501: privileges), like connection, resource, shutdown and serialization failures.
 */
const PERMANENT_SQLSTATE_CLASSES = new Set(['22', '23']);

/** A message over a size limit (the blob, memo, id or search attribute limits, gRPC's max message). */
const TOO_LARGE = /larger than max|exceeds (the )?(size )?limit|too large/i;

export function classifyStartFailure(err: unknown): StartFailure {
  const error = errorText(err);
  if (err instanceof PermanentError) return { kind: 'permanent', code: err.code, error };
  const grpc = grpcServiceError(err);
  if (grpc) {
    const said = grpc.details || grpc.message;
    const detail = `${error}: ${said}`;
    // RESOURCE_EXHAUSTED is also rate limiting: only "too large" makes it the message's own.
    const permanent = TOO_LARGE.test(said)
      ? MESSAGE_CODES.has(grpc.code)
      : (grpc.code === INVALID_ARGUMENT || grpc.code === OUT_OF_RANGE) && !DEPLOYMENT_WIDE.test(said);
    if (permanent) return { kind: 'permanent', code: START_REJECTED, error: detail };
    return { kind: 'transient', error: detail };
  }
  if (err instanceof pg.DatabaseError && PERMANENT_SQLSTATE_CLASSES.has(String(err.code).slice(0, 2)))
    return { kind: 'permanent', code: REQUEST_REJECTED, error: `${error} (SQLSTATE ${err.code})` };
  // Unknown failures (network, timeouts, a bug) count as transient: the bridge's attempt limit bounds them.
  return { kind: 'transient', error };
}

/** The client wraps the gRPC error of a failed start in a ServiceError's cause. */
function grpcServiceError(err: unknown): { code: number; details: string; message: string } | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    if (isGrpcServiceError(e)) return { code: e.code, details: e.details, message: e.message };
  }
  return undefined;
}
