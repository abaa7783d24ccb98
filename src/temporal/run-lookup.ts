import type { Client, WorkflowExecutionInfo } from '@temporalio/client';
import type { Config } from '../config';
import { SA } from '../domain/search-attributes';

/** Quotes a value for a Temporal list filter (single quotes; a quote inside is escaped). */
function quoted(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/**
 * The list filter of one experiment's runs of one deployment: what `benchctl cancel` uses and what
 * to type into the Temporal Web UI. Runs started before the deployment attribute existed have none;
 * they match too (a legacy run must stay cancelable), and the caller confirms such a run against
 * its own database (`isOwnRun`), since the filter alone cannot tell whose it is.
 */
export function experimentRunsQuery(
  deploymentId: string,
  experimentId: number,
  opts: { runningOnly?: boolean } = {},
): string {
  const dep = SA.deploymentId.name;
  return (
    `${SA.experimentId.name} = ${quoted(String(experimentId))} AND (${dep} = ${quoted(deploymentId)} OR ${dep} IS NULL)` +
    (opts.runningOnly ? ` AND ExecutionStatus = 'Running'` : '')
  );
}

/** The Temporal Web UI's workflow list filtered to one experiment's runs of this deployment. */
export function experimentRunsUiLink(config: Config, experimentId: number): string {
  const query = experimentRunsQuery(config.deploymentId, experimentId);
  return `${config.temporal.uiUrl}/namespaces/${encodeURIComponent(config.temporal.namespace)}/workflows?query=${encodeURIComponent(query)}`;
}

/** The deployment a run was started by; null for a run started before the attribute existed. */
function runDeployment(run: WorkflowExecutionInfo): string | null {
  const value = run.typedSearchAttributes.get(SA.deploymentId);
  return value ?? null;
}

/**
 * Runs of one experiment of this deployment, newest first, found through the ExperimentId and
 * AgentbenchDeploymentId search attributes. `isOwnRun` decides for runs without the deployment
 * attribute (e.g. "is its request stored in our database").
 */
export async function findExperimentRuns(
  client: Client,
  scope: { deploymentId: string; isOwnRun: (workflowId: string) => Promise<boolean> },
  experimentId: number,
  opts: { runningOnly?: boolean } = {},
): Promise<WorkflowExecutionInfo[]> {
  const query = experimentRunsQuery(scope.deploymentId, experimentId, opts);
  const runs: WorkflowExecutionInfo[] = [];
  for await (const wf of client.workflow.list({ query })) {
    if (runDeployment(wf) === scope.deploymentId || (await scope.isOwnRun(wf.workflowId))) runs.push(wf);
  }
  return runs.sort((a, b) => b.startTime.getTime() - a.startTime.getTime());
}
