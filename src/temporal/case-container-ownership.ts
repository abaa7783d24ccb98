import { isOpenWorkflowState } from '../domain/run-status';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type pg from 'pg';
import { getCaseStatuses } from '../db/run-case-repository';
import { isTerminalStatus } from '../domain/case-status';
import { errorText } from '../domain/errors';
import { LABELS } from '../docker/labels';
import type { OwnershipVerdict } from '../docker/orphan-reaper';

interface CaseContainerOwnershipDeps {
  pool: pg.Pool;
  client: Client;
  /** How long one Temporal describe may take; past it the answer is "unknown", never "orphan". */
  describeTimeoutMs?: number;
}

const DEFAULT_DESCRIBE_TIMEOUT_MS = 10_000;

/**
 * The orphan reaper's question for one of our deployment's case containers: is its case still
 * wanted? Wanted while its run_cases row is active and its workflow is running; an orphan once the
 * row is terminal or gone, or the workflow is closed or unknown to Temporal; "unknown" whenever
 * Postgres or Temporal cannot answer (down, slow, overloaded) — the reaper then keeps the container
 * and asks again next sweep, because removing a live case's container fails that case for good.
 */
export function caseContainerOwnership(
  deps: CaseContainerOwnershipDeps,
): (labels: Record<string, string>) => Promise<OwnershipVerdict> {
  const wanted = caseOwnership(deps);
  return async (labels) => {
    const experimentId = Number(labels[LABELS.experimentId]);
    const runCaseId = Number(labels[LABELS.runCaseId]);
    const workflowId = labels[LABELS.workflowId];
    // Our deployment's label but no case identity: nothing can ever want it.
    if (!Number.isSafeInteger(experimentId) || !Number.isSafeInteger(runCaseId) || !workflowId)
      return { verdict: 'orphan', reason: 'no case labels' };
    return wanted({ experimentId, runCaseId, workflowId });
  };
}

/** The same question for a case by its ids (an attempt Temporal gave up on asks it of its own case). */
export function caseOwnership(
  deps: CaseContainerOwnershipDeps,
): (ref: { experimentId: number; runCaseId: number; workflowId: string }) => Promise<OwnershipVerdict> {
  const describeTimeoutMs = deps.describeTimeoutMs ?? DEFAULT_DESCRIBE_TIMEOUT_MS;
  return async ({ experimentId, runCaseId, workflowId }) => {
    let status: string | undefined;
    try {
      status = (await getCaseStatuses(deps.pool, experimentId, [runCaseId])).get(runCaseId);
    } catch (err) {
      return { verdict: 'unknown', reason: `postgres: ${errorText(err)}` };
    }
    if (status === undefined) return { verdict: 'orphan', reason: 'case row not found' };
    if (isTerminalStatus(status)) return { verdict: 'orphan', reason: `case row ${status}` };

    try {
      const description = await deps.client.connection.withDeadline(Date.now() + describeTimeoutMs, () =>
        deps.client.workflow.getHandle(workflowId).describe(),
      );
      // The handle has no run id: a chain that continued as new answers with its newest run.
      if (isOpenWorkflowState(description.status.name)) return { verdict: 'wanted' };
      return { verdict: 'orphan', reason: `workflow ${description.status.name}` };
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return { verdict: 'orphan', reason: 'workflow not found' };
      return { verdict: 'unknown', reason: `temporal: ${errorText(err)}` };
    }
  };
}
