import { readFile } from 'node:fs/promises';
import type { Client } from '@temporalio/client';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { Worker, type ReplayResult } from '@temporalio/worker';
import { WORKFLOWS_PATH } from './workflows-path';
import { replayTracingOptions } from '../tracing/temporal-tracing';

export interface ReplayInput {
  workflowId: string;
  history: unknown;
}

/** Every run of a workflow id (continue-as-new chains included), oldest first, from the server. */
export async function fetchWorkflowHistories(client: Client, workflowId: string): Promise<ReplayInput[]> {
  const runs: Array<{ runId: string; startTime: Date }> = [];
  for await (const wf of client.workflow.list({
    query: `WorkflowId = '${workflowId.replace(/'/g, "\\'")}'`,
  })) {
    runs.push({ runId: wf.runId, startTime: wf.startTime });
  }
  if (runs.length === 0) throw new Error(`workflow ${workflowId} not found`);
  runs.sort((a, b) => a.startTime.getTime() - b.startTime.getTime());
  const out: ReplayInput[] = [];
  for (const r of runs)
    out.push({ workflowId, history: await client.workflow.getHandle(workflowId, r.runId).fetchHistory() });
  return out;
}

/** A history JSON file as `temporal workflow show --output json` or test/histories write it. */
export async function readHistoryFile(file: string): Promise<ReplayInput> {
  const json = JSON.parse(await readFile(file, 'utf8')) as unknown;
  return { workflowId: file, history: historyFromJSON(json) };
}

/**
 * Replays histories through the current workflow code. Resolves with one result per history; a
 * result with `error` set means the code is not compatible with that history (non-determinism).
 * `tracing`: with the orchestrator-tracing workflow interceptors, as a tracing worker runs it.
 */
export async function replayHistories(
  inputs: ReplayInput[],
  workflowsPath = WORKFLOWS_PATH,
  opts: { tracing?: boolean } = {},
): Promise<ReplayResult[]> {
  const tracing = opts.tracing ? replayTracingOptions() : null;
  const options = tracing
    ? { workflowsPath, interceptors: { workflowModules: tracing.workflowModules }, sinks: tracing.sinks }
    : { workflowsPath };
  const results: ReplayResult[] = [];
  for await (const r of Worker.runReplayHistories(options, inputs)) results.push(r);
  return results;
}
