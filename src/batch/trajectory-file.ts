import { decodeAttributes } from '../domain/otlp-attributes';
import type { BatchTask } from '../domain/batch-task';

/**
 * The agent-data platform's trajectory file of one task, built from what our tables hold for its
 * case: `run_cases.agent_trajectory` (the runtime's OTel spans as CONTRACT §4.4 steps, each span
 * carrying its step in an `agentbench.step` event; or the runtime's stdout steps when no span
 * arrived) and `run_cases.agent_output` (the runtime's output line). Pure.
 */

export interface TrajectoryStep {
  step_id: number;
  action_type: string;
  action_params: unknown;
  observation: string;
  success: boolean;
  error_type: string | null;
  error_message: string | null;
  timestamp: string;
  /** Seconds. */
  duration: number;
}

export interface TrajectoryFile {
  task_id: string;
  runtime_id: string | null;
  success: boolean;
  steps: TrajectoryStep[];
  final_result: unknown;
  error_type: string | null;
  error_message: string | null;
  /** Seconds, the case's latency (container phase + trajectory query). */
  total_duration: number;
  metadata: Record<string, unknown>;
  created_at: string;
}

/** What the writer reads of one case (a run_cases row and ours). */
export interface BatchCaseRecord {
  experimentId: number;
  runCaseId: number;
  status: string;
  agentOutput: unknown;
  agentTrajectory: unknown;
  errorMessage: string | null;
  latencyMs: number | null;
  inputTokens: number | null;
  outputTokens: number | null;
  finishedAt: Date | null;
  cached: boolean;
}

type Json = Record<string, unknown>;

function isRecord(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function text(v: unknown): string | null {
  return typeof v === 'string' && v !== '' ? v : null;
}

function parseJsonText(v: unknown): unknown {
  if (typeof v !== 'string') return v ?? null;
  try {
    return JSON.parse(v);
  } catch {
    return v;
  }
}

/** One step from a span step's `agentbench.step` event; null when the span carries none. */
function stepFromSpan(s: Json): TrajectoryStep | null {
  const events = Array.isArray(s.events) ? s.events : [];
  const event = events.find((e): e is Json => isRecord(e) && e.name === 'agentbench.step');
  if (!event) return null;
  let a: Json;
  try {
    a = Array.isArray(event.attributes)
      ? decodeAttributes(event.attributes)
      : isRecord(event.attributes)
        ? event.attributes
        : {};
  } catch {
    return null;
  }
  const startMs = typeof s.start_time_ms === 'number' ? s.start_time_ms : 0;
  const latencyMs = typeof s.latency_ms === 'number' ? s.latency_ms : 0;
  return {
    step_id: 0,
    action_type: text(a.action_type) ?? text(s.name) ?? 'tool_call',
    action_params: parseJsonText(a.action_params),
    observation: typeof a.observation === 'string' ? a.observation : '',
    success: a.success === true,
    error_type: text(a.error_type),
    error_message: text(a.error_message),
    timestamp: new Date(startMs).toISOString(),
    duration: latencyMs / 1000,
  };
}

/** A step already in the file's shape (the runtime's stdout trajectory, the fallback). */
function stepFromStdout(s: Json): TrajectoryStep | null {
  if (typeof s.action_type !== 'string') return null;
  return {
    step_id: 0,
    action_type: s.action_type,
    action_params: s.action_params ?? null,
    observation: typeof s.observation === 'string' ? s.observation : JSON.stringify(s.observation ?? ''),
    success: s.success === true,
    error_type: text(s.error_type),
    error_message: text(s.error_message),
    timestamp: typeof s.timestamp === 'string' ? s.timestamp : new Date(0).toISOString(),
    duration: typeof s.duration === 'number' ? s.duration : 0,
  };
}

function trajectorySteps(agentTrajectory: unknown): TrajectoryStep[] {
  if (!Array.isArray(agentTrajectory)) return [];
  const steps: TrajectoryStep[] = [];
  for (const s of agentTrajectory) {
    if (!isRecord(s)) continue;
    const step = stepFromSpan(s) ?? stepFromStdout(s);
    if (step) steps.push({ ...step, step_id: steps.length + 1 });
  }
  return steps;
}

/** The case's own failure as the file's error type, when the runtime printed no typed one. */
function caseErrorType(status: string): string | null {
  switch (status) {
    case 'success':
      return null;
    case 'timeout':
      return 'timeout';
    case 'canceled':
      return 'canceled';
    default:
      return 'runtime_crash';
  }
}

export function buildTrajectoryFile(task: BatchTask, c: BatchCaseRecord, now: Date): TrajectoryFile {
  const out = isRecord(c.agentOutput) ? c.agentOutput : {};
  const runtimeReported = typeof out.success === 'boolean';
  const success = c.status === 'success' && out.success === true;
  const errorType = success ? null : (text(out.error_type) ?? caseErrorType(c.status) ?? 'task_failed');
  const errorMessage = success
    ? null
    : (text(out.error_message) ??
      c.errorMessage ??
      (runtimeReported ? null : 'the runtime printed no result'));
  return {
    task_id: task.task_id,
    runtime_id: text(out.runtime_id),
    success,
    steps: trajectorySteps(c.agentTrajectory),
    final_result: success || runtimeReported ? (out.final_result ?? null) : null,
    error_type: errorType,
    error_message: errorMessage,
    total_duration: (c.latencyMs ?? 0) / 1000,
    metadata: {
      task_type: task.task_type,
      description: task.description,
      experiment_id: c.experimentId,
      run_case_id: c.runCaseId,
      case_status: c.status,
      cached: c.cached,
      usage: { input_tokens: c.inputTokens ?? 0, output_tokens: c.outputTokens ?? 0 },
    },
    created_at: (c.finishedAt ?? now).toISOString(),
  };
}

export interface BatchSummary {
  experiment_id: number;
  workflow_id: string;
  tasks_file: string;
  started_at: string;
  finished_at: string;
  /** Seconds, wall clock of the whole batch. */
  total_duration: number;
  counts: {
    total: number;
    succeeded: number;
    failed: number;
    invalid_lines: number;
    by_type: Record<string, { total: number; succeeded: number; failed: number }>;
    by_error_type: Record<string, number>;
  };
  cache: { hits: number; misses: number };
  durations: { sum_task_seconds: number; mean_task_seconds: number; max_task_seconds: number };
  tasks: Array<{
    task_id: string;
    task_type: string;
    success: boolean;
    cached: boolean;
    error_type: string | null;
    duration: number;
    file: string;
  }>;
}

export function buildBatchSummary(p: {
  experimentId: number;
  workflowId: string;
  tasksFile: string;
  startedAt: Date;
  finishedAt: Date;
  invalidLines: number;
  files: Array<{ file: string; trajectory: TrajectoryFile; taskType: string }>;
}): BatchSummary {
  const byType: BatchSummary['counts']['by_type'] = {};
  const byError: Record<string, number> = {};
  let succeeded = 0;
  let hits = 0;
  let sum = 0;
  let max = 0;
  for (const { trajectory: t, taskType } of p.files) {
    const bucket = (byType[taskType] ??= { total: 0, succeeded: 0, failed: 0 });
    bucket.total += 1;
    if (t.success) {
      succeeded += 1;
      bucket.succeeded += 1;
    } else {
      bucket.failed += 1;
      const type = t.error_type ?? 'task_failed';
      byError[type] = (byError[type] ?? 0) + 1;
    }
    if (t.metadata.cached === true) hits += 1;
    sum += t.total_duration;
    max = Math.max(max, t.total_duration);
  }
  const total = p.files.length;
  return {
    experiment_id: p.experimentId,
    workflow_id: p.workflowId,
    tasks_file: p.tasksFile,
    started_at: p.startedAt.toISOString(),
    finished_at: p.finishedAt.toISOString(),
    total_duration: (p.finishedAt.getTime() - p.startedAt.getTime()) / 1000,
    counts: {
      total,
      succeeded,
      failed: total - succeeded,
      invalid_lines: p.invalidLines,
      by_type: byType,
      by_error_type: byError,
    },
    cache: { hits, misses: total - hits },
    durations: { sum_task_seconds: sum, mean_task_seconds: total ? sum / total : 0, max_task_seconds: max },
    tasks: p.files.map(({ file, trajectory: t, taskType }) => ({
      task_id: t.task_id,
      task_type: taskType,
      success: t.success,
      cached: t.metadata.cached === true,
      error_type: t.error_type,
      duration: t.total_duration,
      file,
    })),
  };
}
