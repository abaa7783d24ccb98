import type { RunCaseInput, ExperimentRunRequested } from '../src/domain/message';
import type { ResolvedCaseSpec } from '../src/domain/runtime-spec';
import { buildCommandContext, renderCommandTemplate } from '../src/domain/template';
import { isIdleStartCommand, type CaseContainerSpec } from '../src/docker/docker-sandbox';
import { caseContainerName, LABELS } from '../src/docker/labels';
import { mergeCaseOtelEnv } from '../src/otel/case-otel-env';
import type { WarmSandboxTemplate } from '../src/docker/warm-pool';
import type { CaseNetwork, CaseNetworkPlan } from './case-network';
import type { TaskCasePlan } from './task-case';

/** Where every case container finds its own case as JSON (ARCHITECTURE §5 item 9). */
const CASE_FILE_PATH = '/benchmark/case.json';

export interface CaseCommands {
  start: string | undefined;
  exec: string;
  after: string;
}

/** The case's commands with its template variables filled in; throws on an undeclared variable. */
export function renderCaseCommands(
  ids: { experimentId: number; runCaseId: number },
  request: ExperimentRunRequested,
  caseInput: RunCaseInput,
  spec: ResolvedCaseSpec,
  mockBaseUrl: string,
): CaseCommands {
  const context = buildCommandContext({
    experimentId: ids.experimentId,
    datasetId: request.dataset.id,
    datasetName: request.dataset.name,
    agentId: request.agent.id,
    agentName: request.agent.name,
    agentKey: request.agent.agent_key,
    agentVersion: request.agent.version,
    runCase: {
      runCaseId: ids.runCaseId,
      dataItemId: caseInput.data_item_id,
      attemptNo: caseInput.attempt_no,
      userInput: caseInput.user_input,
      sessionJsonl: caseInput.session_jsonl,
      traceId: caseInput.trace_id,
    },
    mockBaseUrl,
  });
  return {
    // §6.2: sandbox_start_command, else the legacy agent_command (not rendered), else image CMD.
    start: renderCommandTemplate(spec.sandboxStartCommand, context) || spec.agentCommand?.trim() || undefined,
    exec: renderCommandTemplate(spec.caseExecCommand, context),
    after: renderCommandTemplate(spec.afterExecCommand, context),
  };
}

/** Everything the sandbox needs to create and start one attempt's container. */
export function caseContainerSpec(p: {
  workflowId: string;
  experimentId: number;
  runCaseId: number;
  attempt: number;
  request: ExperimentRunRequested;
  caseInput: RunCaseInput;
  spec: ResolvedCaseSpec;
  plan: Pick<TaskCasePlan, 'env' | 'task'>;
  network: Pick<CaseNetwork, 'env' | 'files' | 'network' | 'hostAddress'>;
  startCommand: string | undefined;
}): CaseContainerSpec {
  const { request, caseInput, spec, plan, network } = p;
  const { runCaseId } = p;
  return {
    // Fixed name per attempt: a create that failed half-way is replaced by the next try.
    name: caseContainerName(p.workflowId, runCaseId, p.attempt),
    image: spec.agentImage,
    startCommand: p.startCommand,
    // The agent's own OTEL_* settings are merged with ours, not overwritten (case-otel-env.ts).
    env: mergeCaseOtelEnv({ ...caseEnv(request, caseInput, spec), ...plan.env }, network.env),
    labels: {
      [LABELS.managed]: 'true',
      [LABELS.experimentId]: String(p.experimentId),
      [LABELS.runCaseId]: String(runCaseId),
      [LABELS.workflowId]: p.workflowId,
      [LABELS.attempt]: String(p.attempt),
      [LABELS.createdAt]: new Date().toISOString(),
    },
    network: network.network ?? spec.dockerNetwork,
    hostAddress: network.hostAddress,
    // A worker that did not prepare the run ensures the image itself, as the run asks.
    pull: { policy: spec.pullPolicy, timeoutSeconds: spec.pullTimeoutSeconds },
    files: [
      {
        path: CASE_FILE_PATH,
        content: JSON.stringify(
          { ...caseFile(request, caseInput), ...(plan.task ? { task: plan.task } : {}) },
          null,
          2,
        ),
        mode: 0o644,
      },
      ...network.files,
    ],
    limits: spec.limits,
    hardening: spec.hardening,
    user: spec.user,
    startup: spec.startup,
  };
}

/**
 * What a warm container for this case is made of (src/docker/warm-pool.ts): caseContainerSpec's
 * create without the case. undefined when the case must have a container made for it, because its
 * container's create depends on the case: a start command other than an idle one (an image CMD or a
 * server the agent starts may read the case's env, which a warm container gets only with each exec,
 * or be a template of the case's); a network named by the spec is joined as it is, and a network of
 * the case's own (sealed or not) is made with the warm container: it is plain Docker and firewall,
 * its gateway and OTel token come at the claim.
 */
export function warmSandboxTemplate(
  spec: ResolvedCaseSpec,
  ownNetwork: CaseNetworkPlan | undefined,
): WarmSandboxTemplate | undefined {
  const start = spec.sandboxStartCommand.trim() || spec.agentCommand?.trim() || undefined;
  if (start === undefined || !isIdleStartCommand(start)) return undefined;
  return {
    container: {
      image: spec.agentImage,
      startCommand: start,
      pull: { policy: spec.pullPolicy, timeoutSeconds: spec.pullTimeoutSeconds },
      limits: spec.limits,
      hardening: spec.hardening,
      user: spec.user,
      startup: spec.startup,
    },
    network: ownNetwork ? undefined : spec.dockerNetwork,
    ownNetwork,
  };
}

/** The case as structured data, so an agent never has to parse shell-spliced text (§13.10). */
function caseFile(req: ExperimentRunRequested, c: RunCaseInput) {
  return {
    experiment_id: req.experiment.id,
    dataset: { id: req.dataset.id, name: req.dataset.name },
    agent: {
      id: req.agent.id,
      name: req.agent.name,
      agent_key: req.agent.agent_key,
      version: req.agent.version,
    },
    run_case_id: c.run_case_id,
    data_item_id: c.data_item_id,
    attempt_no: c.attempt_no,
    user_input: c.user_input,
    session_jsonl: c.session_jsonl,
    reference_output: c.reference_output,
    trace_id: c.trace_id,
  };
}

function caseEnv(
  req: ExperimentRunRequested,
  c: RunCaseInput,
  spec: ResolvedCaseSpec,
): Record<string, string> {
  return {
    ...spec.env,
    BENCHMARK_EXPERIMENT_ID: String(req.experiment.id),
    BENCHMARK_DATASET_ID: String(req.dataset.id),
    BENCHMARK_AGENT_KEY: req.agent.agent_key,
    BENCHMARK_RUN_CASE_ID: String(c.run_case_id),
    BENCHMARK_DATA_ITEM_ID: String(c.data_item_id),
    BENCHMARK_ATTEMPT_NO: String(c.attempt_no),
    BENCHMARK_USER_INPUT: c.user_input,
    BENCHMARK_SESSION_JSONL: c.session_jsonl,
    BENCHMARK_TRACE_ID: c.trace_id ?? '',
    BENCHMARK_CASE_FILE: CASE_FILE_PATH,
  };
}
