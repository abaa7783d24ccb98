import type pg from 'pg';
import {
  experimentRunRequestedSchema,
  type ExperimentRunRequested,
  type RunCaseInput,
} from '../domain/message';
import {
  resolveCaseSpec,
  RuntimeSpecError,
  type CaseSpecDefaults,
  type ResolvedCaseSpec,
} from '../domain/runtime-spec';
import { MissingRunRequestError } from './errors';
import { revealRunInput } from './run-input-secrets';
import { loadCaseInput, loadRunRequest } from './run-request-repository';

export type LoadedRunRequest = {
  request: ExperimentRunRequested;
  messageId: string;
} & (
  | { spec: ResolvedCaseSpec; specError: null }
  /** The runtime spec is unusable: the run then fails as a whole, with this error. */
  | { spec: null; specError: RuntimeSpecError }
);

const MAX_CACHED_RUNS = 64;

/**
 * What a run's message said, read from agentbench_run_requests once per worker and run, its
 * runtime spec resolved with this worker's defaults: every case activity of a run needs it, and
 * re-reading it per case would be wasted work. Its sealed secrets are opened here, with this
 * worker's AGENTBENCH_SECRETS_KEY, and live only in this process's memory.
 */
export class RunRequestCache {
  private readonly runs = new Map<string, Promise<LoadedRunRequest>>();

  constructor(
    private readonly pool: pg.Pool,
    private readonly defaults: CaseSpecDefaults,
    private readonly secretsKey: Buffer | undefined,
  ) {}

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
    if (!stored) throw new MissingRunRequestError(`no stored run request for ${workflowId}`);
    const request = experimentRunRequestedSchema.parse({
      ...revealRunInput(stored.request, this.secretsKey),
      run_cases: [],
    });
    const { messageId } = stored;
    try {
      return {
        request,
        messageId,
        spec: resolveCaseSpec(request.agent.runtime_spec_json, this.defaults),
        specError: null,
      };
    } catch (err) {
      if (!(err instanceof RuntimeSpecError)) throw err;
      return { request, messageId, spec: null, specError: err };
    }
  }
}

/** A stored case input (agentbench_case_inputs.case_input), validated as the message's run case. */
export function parseCaseInput(workflowId: string, runCaseId: number, raw: object | null): RunCaseInput {
  if (!raw) throw new MissingRunRequestError(`no stored input for run case ${runCaseId} of ${workflowId}`);
  const [parsed] = experimentRunRequestedSchema.shape.run_cases.parse([raw]);
  if (!parsed) throw new Error('case input parse returned nothing');
  return parsed;
}
