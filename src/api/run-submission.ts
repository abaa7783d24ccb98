import { createHash } from 'node:crypto';
import type pg from 'pg';
import { WorkflowNotFoundError } from '@temporalio/client';
import { experimentRunRequestedSchema, type ExperimentRunRequested } from '../domain/message';
import { pythonCanonicalJson } from '../domain/runtime-snapshot';
import { workflowIdForRun } from '../domain/experiment-run';
import { withTransaction } from '../db/experiment-repository';
import { claimIdempotencyKey, recordIdempotentRun } from '../db/idempotency-repository';
import { loadCaseInputs, loadRunRequest } from '../db/run-request-repository';
import { getRunRecord } from '../db/run-view-repository';
import { TemporalUnavailableError } from '../temporal/errors';
import { startStoredRun, storeRunRequest, type RunStarterDeps } from '../temporal/run-starter';
import { ApiError } from './api-errors';

/**
 * A run submitted over HTTP: the platform rows it needs and its stored request are written in one
 * transaction — together with its Idempotency-Key record, when there is one — and only then is the
 * workflow started (idempotent by workflow id). So the same key can never dispatch twice, and a
 * request whose start failed (Temporal away) is finished by a retry with the same key.
 */

interface Submission {
  /** Token name: idempotency keys are scoped by it. */
  principal: string;
  idempotencyKey: string | undefined;
  /** Names the operation in the idempotency record (a key used for another operation is a conflict). */
  operation: 'create-run' | 'retry-failed';
  /** The validated request; its canonical JSON is what "the same body" means. */
  body: unknown;
  /** Writes the platform rows in the given transaction and returns the v2 message for them. */
  dispatch: (client: pg.PoolClient) => Promise<ExperimentRunRequested>;
}

export interface Submitted {
  workflowId: string;
  experimentId: number;
  /** The key had been used for this body before: the run is that earlier one. */
  replayed: boolean;
  /** What the dispatch returned (absent on a replay). */
  message?: ExperimentRunRequested;
}

const requestDigest = (operation: string, body: unknown) =>
  createHash('sha256')
    .update(`${operation}\n${pythonCanonicalJson(body)}`)
    .digest('hex');

/** The stored, redacted request of a run with all its case inputs: enough to start its workflow. */
async function storedMessage(pool: pg.Pool, workflowId: string): Promise<ExperimentRunRequested> {
  const stored = await loadRunRequest(pool, workflowId);
  if (!stored) throw new Error(`no stored run request for ${workflowId}`);
  return experimentRunRequestedSchema.parse({
    ...stored.request,
    run_cases: await loadCaseInputs(pool, workflowId),
  });
}

/** The run is stored whatever Temporal does; a failed start is finished by a retry with the same key. */
async function temporal<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw new TemporalUnavailableError(err);
  }
}

export async function submitRun(deps: RunStarterDeps, s: Submission): Promise<Submitted> {
  const { pool } = deps;
  const key = s.idempotencyKey
    ? {
        principal: s.principal,
        key: s.idempotencyKey,
        operation: s.operation,
        requestSha256: requestDigest(s.operation, s.body),
      }
    : null;

  const outcome = await withTransaction(pool, async (client) => {
    if (key) {
      const claim = await claimIdempotencyKey(client, key);
      if (claim.kind === 'conflict') {
        throw new ApiError(
          409,
          'E_IDEMPOTENCY_KEY_REUSED',
          'this Idempotency-Key was used with another request body',
        );
      }
      if (claim.kind === 'replay') return { workflowId: claim.workflowId, message: null };
    }
    const message = await s.dispatch(client);
    // Our own dispatches are fresh messages: the message id is the workflow id's suffix.
    const workflowId = workflowIdForRun(message.experiment.id, message.message_id);
    await storeRunRequest(client, message, workflowId, deps);
    if (key) await recordIdempotentRun(client, key, workflowId);
    return { workflowId, message };
  });

  if (outcome.message) {
    await temporal(() => startStoredRun(deps, outcome.message, outcome.workflowId));
    return {
      workflowId: outcome.workflowId,
      experimentId: outcome.message.experiment.id,
      replayed: false,
      message: outcome.message,
    };
  }
  // A replay: the first request may have died between its commit and its start.
  const known = await temporal(() =>
    deps.client.workflow
      .getHandle(outcome.workflowId)
      .describe()
      .then(
        () => true,
        (err: unknown) => {
          if (err instanceof WorkflowNotFoundError) return false;
          throw err;
        },
      ),
  );
  if (!known) {
    const message = await storedMessage(pool, outcome.workflowId);
    await temporal(() => startStoredRun(deps, message, outcome.workflowId));
  }
  const record = await getRunRecord(pool, outcome.workflowId);
  if (!record) throw new Error(`idempotency record names ${outcome.workflowId}, which has no stored request`);
  return { workflowId: outcome.workflowId, experimentId: record.experimentId, replayed: true };
}
