import type { TaskType } from './batch-task';

/**
 * The built-in runtimes (scripts/runtimes/, images built by scripts/build-images) and how a batch
 * task picks one: a batch is one experiment whose agent's runtime spec carries a `task_runtimes`
 * entry per task type, merged over the spec's top level for each case by its task's type. Pure.
 */

interface BuiltInRuntime {
  image: string;
  command: string;
  memoryMb: number;
  pidsLimit: number;
  /** The container's user; the code runtime runs untrusted code as nobody. */
  user?: string;
}

const BUILT_IN_RUNTIMES: Record<TaskType, BuiltInRuntime> = {
  code: {
    image: 'bench/runtime-code:latest',
    command: 'python3 /runtime/code_agent.py',
    memoryMb: 512,
    pidsLimit: 128,
    user: '65534:65534',
  },
  web: {
    image: 'bench/runtime-web:latest',
    command: 'node /runtime/web_agent.js',
    memoryMb: 1536,
    pidsLimit: 512,
  },
  reasoning: {
    image: 'bench/runtime-reasoning:latest',
    command: 'node /runtime/reasoning_agent.js',
    memoryMb: 1536,
    pidsLimit: 512,
  },
};

/** On top of a task's own timeout (which the runtime enforces itself): browser start, span export. */
const TASK_TIMEOUT_SLACK_SECONDS = 30;

const BATCH_RUNTIME_TYPE = 'agentbench_tasks';

/**
 * `runtime_spec_json.cache`: `true` = reuse a stored result of the same inputs and store new
 * ones; `"refresh"` (a `--no-cache` run) = always run, and store what it produces.
 */
export type ResultCacheMode = 'off' | 'use' | 'refresh';

export function resultCacheMode(rawSpec: Record<string, unknown>): ResultCacheMode {
  if (rawSpec.cache === true) return 'use';
  if (rawSpec.cache === 'refresh') return 'refresh';
  return 'off';
}

/** The runtime spec of a batch's agent. */
export function batchRuntimeSpec(p: {
  maxTaskTimeoutSeconds: number;
  cache: boolean;
}): Record<string, unknown> {
  const entry = (r: BuiltInRuntime) => ({
    agent_image: r.image,
    case_exec_command: r.command,
    memory_mb: r.memoryMb,
    pids_limit: r.pidsLimit,
    ...(r.user ? { user: r.user } : {}),
  });
  return {
    runtime_type: BATCH_RUNTIME_TYPE,
    ...entry(BUILT_IN_RUNTIMES.code),
    // The images are local (scripts/build-images): never pulled.
    pull_policy: 'if-not-present',
    case_timeout_seconds: Math.ceil(p.maxTaskTimeoutSeconds) + TASK_TIMEOUT_SLACK_SECONDS,
    cache: p.cache,
    task_runtimes: {
      code: entry(BUILT_IN_RUNTIMES.code),
      web: entry(BUILT_IN_RUNTIMES.web),
      reasoning: entry(BUILT_IN_RUNTIMES.reasoning),
    },
  };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * The runtime spec one task's case runs with: its type's `task_runtimes` entry over the top level,
 * and a case timeout that fits the task's own. Without an entry for the type, the top level.
 */
export function taskRuntimeSpecJson(
  rawSpec: Record<string, unknown>,
  task: { task_type: string; timeout: number },
): Record<string, unknown> {
  const { task_runtimes: runtimes, ...top } = rawSpec;
  const entry = isRecord(runtimes) && isRecord(runtimes[task.task_type]) ? runtimes[task.task_type] : {};
  return {
    ...top,
    ...(entry as Record<string, unknown>),
    case_timeout_seconds: Math.ceil(task.timeout) + TASK_TIMEOUT_SLACK_SECONDS,
  };
}

/** The images a spec may start: its own and every task runtime's (prepareRun checks them all). */
export function specImages(rawSpec: Record<string, unknown>): string[] {
  const images = new Set<string>();
  if (typeof rawSpec.agent_image === 'string') images.add(rawSpec.agent_image.trim());
  if (isRecord(rawSpec.task_runtimes)) {
    for (const entry of Object.values(rawSpec.task_runtimes)) {
      if (isRecord(entry) && typeof entry.agent_image === 'string') images.add(entry.agent_image.trim());
    }
  }
  return [...images].filter((i) => i !== '');
}
