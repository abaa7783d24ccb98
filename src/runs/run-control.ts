import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { TemporalUnavailableError } from '../temporal/errors';
import type pg from 'pg';
import { getRunRecord } from '../db/run-view-repository';
import { findExperimentRuns } from '../temporal/run-lookup';

/**
 * Cancelling runs (`benchctl cancel`, `POST /v1/runs/{id}/cancel`) is a workflow cancellation: the
 * run kills its in-flight containers, marks its remaining cases canceled and leaves the experiment
 * manual_terminated, as the platform's own terminate does (workflows/experiment-run.ts).
 */
type CancelRequest = 'requested' | 'not_running' | 'not_found';

export async function requestRunCancel(client: Client, workflowId: string): Promise<CancelRequest> {
  const handle = client.workflow.getHandle(workflowId);
  try {
    const d = await handle.describe();
    if (d.status.name !== 'RUNNING') return 'not_running';
    await handle.cancel();
    return 'requested';
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return 'not_found';
    throw new TemporalUnavailableError(err);
  }
}

/**
 * Requests the cancellation of every running run of an experiment of this deployment (a run of
 * another platform database in the same namespace is never touched); returns their workflow ids.
 */
export async function cancelExperimentRuns(
  deps: { client: Client; pool: pg.Pool; deploymentId: string },
  experimentId: number,
): Promise<string[]> {
  const { client, pool, deploymentId } = deps;
  const runs = await findExperimentRuns(
    client,
    // A run started before the deployment attribute: ours when its request is in our database.
    { deploymentId, isOwnRun: async (workflowId) => (await getRunRecord(pool, workflowId)) !== null },
    experimentId,
    { runningOnly: true },
  );
  const canceled: string[] = [];
  for (const run of runs) {
    if ((await requestRunCancel(client, run.workflowId)) === 'requested') canceled.push(run.workflowId);
  }
  return canceled;
}
