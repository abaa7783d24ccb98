import type pg from 'pg';
import { ApplicationFailure } from '@temporalio/common';
import {
  experimentRunRequestedSchema,
  type ExperimentRunRequested,
  type RunCaseInput,
} from '../src/domain/message';
import { parseRuntimeSpec, type RuntimeSpec } from '../src/domain/runtime-spec';
import { loadCaseInput, loadRunRequest } from '../src/db/run-request-repository';

export interface LoadedRunRequest {
  request: ExperimentRunRequested;
  messageId: string;
  /** null with the reason when the runtime spec is unusable (the run then fails as a whole). */
  spec: RuntimeSpec | null;
  specError: string | null;
}

const MAX_CACHED_RUNS = 64;

/**
 * What a run's message said, read from agentbench_run_requests once per worker and run: every case
 * activity of a run needs the agent's runtime spec, and re-reading it per case would be wasted work.
 */
export class RunRequestCache {
  private readonly runs = new Map<string, Promise<LoadedRunRequest>>();

  constructor(private readonly pool: pg.Pool) {}

  get(workflowId: string): Promise<LoadedRunRequest> {
    let entry = this.runs.get(workflowId);
    if (!entry) {
      entry = this.load(workflowId);
      entry.catch(() => this.runs.delete(workflowId));
      this.runs.set(workflowId, entry);
      if (this.runs.size > MAX_CACHED_RUNS) {
        const oldest = this.runs.keys().next().value;
        if (oldest !== undefined) this.runs.delete(oldest);
      }
    }
    return entry;
  }

  forget(workflowId: string): void {
    this.runs.delete(workflowId);
  }

  async caseInput(workflowId: string, runCaseId: number): Promise<RunCaseInput> {
    return parseCaseInput(workflowId, runCaseId, await loadCaseInput(this.pool, workflowId, runCaseId));
  }

  private async load(workflowId: string): Promise<LoadedRunRequest> {
    const stored = await loadRunRequest(this.pool, workflowId);
    if (!stored) {
      throw ApplicationFailure.nonRetryable(`no stored run request for ${workflowId}`, 'MissingRunRequest');
    }
    const request = experimentRunRequestedSchema.parse({ ...stored.request, run_cases: [] });
    try {
      return {
        request,
        messageId: stored.messageId,
        spec: parseRuntimeSpec(request.agent.runtime_spec_json),
        specError: null,
      };
    } catch (err) {
      return {
        request,
        messageId: stored.messageId,
        spec: null,
        specError: err instanceof Error ? err.message : String(err),
      };
    }
  }
}

/** A stored case input (agentbench_case_inputs.case_input), validated as the message's run case. */
export function parseCaseInput(workflowId: string, runCaseId: number, raw: object | null): RunCaseInput {
  if (!raw) {
    throw ApplicationFailure.nonRetryable(
      `no stored input for run case ${runCaseId} of ${workflowId}`,
      'MissingRunRequest',
    );
  }
  const [parsed] = experimentRunRequestedSchema.shape.run_cases.parse([raw]);
  if (!parsed) throw new Error('case input parse returned nothing');
  return parsed;
}
