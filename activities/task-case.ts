import type pg from 'pg';
import type { Config } from '../src/config';
import type { BatchTask } from '../src/domain/batch-task';
import type { RunCaseInput, ExperimentRunRequested } from '../src/domain/message';
import { resolveCaseSpec, type CaseSpecDefaults, type ResolvedCaseSpec } from '../src/domain/runtime-spec';
import { resultCacheMode, taskRuntimeSpecJson, type ResultCacheMode } from '../src/domain/task-runtime';
import { cacheKeyEnv, resultCacheKey } from '../src/cache/result-cache-key';
import { loadBatchTask } from '../src/db/batch-task-repository';
import type { CaseRawResult, CaseTrajectory, StoredCaseResult } from '../src/db/case-result-repository';
import { saveCaseResult } from '../src/db/case-result-repository';
import { storeCachedResult, takeCachedResult } from '../src/db/result-cache-repository';

/** What storing a finished result in the result cache needs (the final persist). */
export interface ResultCacheStoreDeps {
  pool: pg.Pool;
  config: Pick<Config, 'resultCache'>;
  images: { imageId(image: string): Promise<string | null> };
}

/** What a case's own task and the result cache add to the container phase. */
export interface TaskCaseDeps extends ResultCacheStoreDeps {
  /** The built-in runtimes' model (LLM_*); its key reaches the container env only. */
  llm: Config['llm'];
  /** The worker's defaults, for a task's own runtime spec (the run's was resolved with the same). */
  specDefaults: CaseSpecDefaults;
}

export interface TaskCasePlan {
  /** The case's batch task (null: an ordinary case). */
  task: BatchTask | null;
  /** The runtime spec this case runs with: its task type's runtime over the run's spec. */
  spec: ResolvedCaseSpec;
  /** Container env for the built-in runtimes' model; the key only here, never stored. */
  env: Record<string, string>;
  cacheMode: ResultCacheMode;
  /** Set when the cache is on for this case. */
  resultCache: { key: string; taskType: string } | null;
}

export async function planTaskCase(
  deps: TaskCaseDeps,
  request: ExperimentRunRequested,
  caseInput: RunCaseInput,
  runSpec: ResolvedCaseSpec,
): Promise<TaskCasePlan> {
  const rawSpec = request.agent.runtime_spec_json;
  const cacheMode = resultCacheMode(rawSpec);
  const task =
    rawSpec.task_runtimes === undefined ? null : await loadBatchTask(deps.pool, caseInput.data_item_id);
  // Parsed at start already (prepareRun validates the run's spec); an entry of task_runtimes can
  // still be invalid, and then this case fails like a case of an invalid spec.
  const spec = task ? resolveCaseSpec(taskRuntimeSpecJson(rawSpec, task), deps.specDefaults) : runSpec;
  const { llm } = deps;
  const env: Record<string, string> = {};
  if (task && llm.baseUrl && llm.model) {
    env.LLM_BASE_URL = llm.baseUrl;
    env.LLM_MODEL = llm.model;
    if (llm.apiKey) env.LLM_API_KEY = llm.apiKey;
  }
  if (cacheMode === 'off') return { task, spec, env, cacheMode, resultCache: null };
  const imageId = (await deps.images.imageId(spec.agentImage)) ?? `missing:${spec.agentImage}`;
  const settings = {
    exec: spec.caseExecCommand,
    after: spec.afterExecCommand,
    start: spec.sandboxStartCommand || spec.agentCommand || null,
    env: cacheKeyEnv(spec.env),
    user: spec.user ?? null,
    memory_mb: spec.limits.memoryMb,
    cpus: spec.limits.cpus,
    pids_limit: spec.limits.pidsLimit,
    network: spec.dockerNetwork ?? null,
    case_timeout_seconds: spec.caseTimeoutSeconds,
    llm: env.LLM_MODEL ? { base_url: env.LLM_BASE_URL, model: env.LLM_MODEL } : null,
  };
  const taskType = task ? task.task_type : spec.runtimeType;
  const key = resultCacheKey(
    task
      ? {
          taskType: task.task_type,
          description: task.description,
          constraints: {
            constraints: task.constraints,
            expected_tools: task.expected_tools,
            max_steps: task.max_steps,
            timeout: task.timeout,
          },
          imageId,
          runtimeSettings: settings,
        }
      : {
          taskType: spec.runtimeType,
          description: caseInput.user_input,
          constraints: {
            session_jsonl: caseInput.session_jsonl,
            reference_output: caseInput.reference_output ?? null,
            mock_config: caseInput.mock_config ?? null,
          },
          imageId,
          runtimeSettings: settings,
        },
  );
  return { task, spec, env, cacheMode, resultCache: { key, taskType } };
}

/**
 * A stored result of the same inputs, as this case's record (no container started): marked
 * `cached` with where it came from; the trajectory is the stored one. Null on a miss.
 */
export async function reuseCachedResult(
  deps: TaskCaseDeps,
  p: {
    workflowId: string;
    runCaseId: number;
    attempt: number;
    resultCache: { key: string; taskType: string };
    phaseStart: number;
  },
): Promise<StoredCaseResult | null> {
  const hit = await takeCachedResult(deps.pool, p.resultCache.key);
  if (!hit) return null;
  const now = new Date().toISOString();
  const result: CaseRawResult = {
    ...hit.result,
    timings: { sandboxConnectMs: 0, caseExecMs: 0, totalMs: 0, containerPhaseMs: Date.now() - p.phaseStart },
    startedAt: now,
    finishedAt: now,
    containerName: null,
    attempt: p.attempt,
    telemetryComplete: true,
    resultCache: {
      ...p.resultCache,
      reusedFrom: {
        workflowId: hit.sourceWorkflowId,
        runCaseId: hit.sourceRunCaseId,
        storedAt: hit.createdAt.toISOString(),
      },
    },
  };
  const trajectory: CaseTrajectory = { ...hit.trajectory, queryMs: 0 };
  return saveCaseResult(deps.pool, p.workflowId, p.runCaseId, result, trajectory);
}

/** After the final persist: a successful, freshly run result becomes reusable. Idempotent. */
export async function rememberResult(
  deps: ResultCacheStoreDeps,
  p: { workflowId: string; runCaseId: number; raw: CaseRawResult; trajectory: CaseTrajectory | null },
): Promise<void> {
  const { raw, trajectory } = p;
  const cache = raw.resultCache;
  if (!cache || cache.reusedFrom || raw.status !== 'success' || !trajectory) return;
  const imageId = (await deps.images.imageId(raw.image)) ?? `missing:${raw.image}`;
  await storeCachedResult(deps.pool, {
    cacheKey: cache.key,
    taskType: cache.taskType,
    imageId,
    result: raw,
    trajectory,
    workflowId: p.workflowId,
    runCaseId: p.runCaseId,
    ttlSeconds: deps.config.resultCache.ttlSeconds,
  });
}

/** `run_cases.artifacts_json` of a reused result. */
export function cacheArtifacts(raw: CaseRawResult): Record<string, unknown> {
  const reused = raw.resultCache?.reusedFrom;
  return reused ? { cached: true, result_cache: { key: raw.resultCache?.key, source: reused } } : {};
}
