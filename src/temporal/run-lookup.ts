import type { Client, WorkflowExecutionInfo } from '@temporalio/client';

/** Runs of one experiment, newest first, found through the ExperimentId search attribute. */
export async function findExperimentRuns(client: Client, experimentId: number, opts: { runningOnly?: boolean } = {}): Promise<WorkflowExecutionInfo[]> {
  const query = `ExperimentId = '${experimentId}'${opts.runningOnly ? ` AND ExecutionStatus = 'Running'` : ''}`;
  const runs: WorkflowExecutionInfo[] = [];
  for await (const wf of client.workflow.list({ query })) runs.push(wf);
  return runs.sort((a, b) => b.startTime.getTime() - a.startTime.getTime());
}
