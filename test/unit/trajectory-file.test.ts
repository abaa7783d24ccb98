import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  buildBatchSummary,
  buildTrajectoryFile,
  type BatchCaseRecord,
} from '../../src/batch/trajectory-file';
import type { BatchTask } from '../../src/domain/batch-task';

const TASK: BatchTask = {
  task_id: 't1',
  task_type: 'web',
  description: 'read the price',
  expected_tools: [],
  max_steps: 10,
  timeout: 60,
  constraints: {},
};

const kv = (key: string, value: object) => ({ key, value });
/** A span step as the trajectory phase stores it (CONTRACT §4.4) with the runtime's step event. */
const spanStep = (n: number, success: boolean) => ({
  step: n,
  name: 'browser_action',
  start_time_ms: Date.UTC(2026, 0, 1, 0, 0, n),
  latency_ms: 1500,
  attributes: { 'tool.name': 'browser' },
  events: [
    {
      name: 'agentbench.step',
      attributes: [
        kv('step_id', { intValue: String(n) }),
        kv('action_type', { stringValue: 'browser_action' }),
        kv('action_params', { stringValue: JSON.stringify({ action: 'goto', url: 'http://site/' }) }),
        kv('observation', { stringValue: 'Welcome' }),
        kv('success', { boolValue: success }),
        ...(success ? [] : [kv('error_type', { stringValue: 'navigation_timeout' })]),
      ],
    },
  ],
});

const RECORD: BatchCaseRecord = {
  experimentId: 5,
  runCaseId: 9,
  status: 'success',
  agentOutput: {
    task_id: 't1',
    runtime_id: 'agentbench-web/1',
    success: true,
    final_result: 'Welcome',
    error_type: null,
  },
  agentTrajectory: [spanStep(1, true)],
  errorMessage: null,
  latencyMs: 2500,
  inputTokens: null,
  outputTokens: null,
  finishedAt: new Date('2026-01-01T00:01:00Z'),
  cached: false,
};

describe('buildTrajectoryFile', () => {
  test('given span steps with step events, then the documented steps', () => {
    const file = buildTrajectoryFile(TASK, RECORD, new Date());
    assert.equal(file.success, true);
    assert.equal(file.runtime_id, 'agentbench-web/1');
    assert.equal(file.final_result, 'Welcome');
    assert.equal(file.total_duration, 2.5);
    assert.equal(file.created_at, '2026-01-01T00:01:00.000Z');
    assert.deepEqual(file.steps, [
      {
        step_id: 1,
        action_type: 'browser_action',
        action_params: { action: 'goto', url: 'http://site/' },
        observation: 'Welcome',
        success: true,
        error_type: null,
        error_message: null,
        timestamp: '2026-01-01T00:00:01.000Z',
        duration: 1.5,
      },
    ]);
    assert.deepEqual(Object.keys(file).sort(), [
      'created_at',
      'error_message',
      'error_type',
      'final_result',
      'metadata',
      'runtime_id',
      'steps',
      'success',
      'task_id',
      'total_duration',
    ]);
  });

  test('given the runtime typed its failure, then that type; given the case timed out with no output, then timeout', () => {
    const typed = buildTrajectoryFile(
      TASK,
      {
        ...RECORD,
        agentOutput: { success: false, error_type: 'navigation_timeout', error_message: 'slow' },
        agentTrajectory: [spanStep(1, false)],
      },
      new Date(),
    );
    assert.equal(typed.success, false);
    assert.equal(typed.error_type, 'navigation_timeout');
    assert.equal(typed.steps[0]?.error_type, 'navigation_timeout');
    const killed = buildTrajectoryFile(
      TASK,
      { ...RECORD, status: 'timeout', agentOutput: null, errorMessage: 'E_CASE_TIMEOUT: x' },
      new Date(),
    );
    assert.equal(killed.error_type, 'timeout');
    assert.equal(killed.error_message, 'E_CASE_TIMEOUT: x');
  });

  test('given stdout steps (no spans arrived), then they are kept as they are', () => {
    const stdoutStep = {
      step_id: 1,
      action_type: 'code_execution',
      action_params: { code: 'x' },
      observation: '1',
      success: true,
      error_type: null,
      error_message: null,
      timestamp: '2026-01-01T00:00:00.000Z',
      duration: 0.1,
    };
    const file = buildTrajectoryFile(TASK, { ...RECORD, agentTrajectory: [stdoutStep] }, new Date());
    assert.deepEqual(file.steps, [stdoutStep]);
  });
});

describe('buildBatchSummary', () => {
  test('counts by outcome, type, error type and cache', () => {
    const ok = buildTrajectoryFile(TASK, { ...RECORD, cached: true }, new Date());
    const bad = buildTrajectoryFile(
      TASK,
      { ...RECORD, status: 'timeout', agentOutput: null, latencyMs: 4000 },
      new Date(),
    );
    const s = buildBatchSummary({
      experimentId: 5,
      workflowId: 'wf',
      tasksFile: 'tasks.jsonl',
      startedAt: new Date(0),
      finishedAt: new Date(10_000),
      invalidLines: 1,
      files: [
        { file: 'trajectories/a.json', trajectory: ok, taskType: 'web' },
        { file: 'trajectories/b.json', trajectory: bad, taskType: 'code' },
      ],
    });
    assert.equal(s.total_duration, 10);
    assert.deepEqual(s.counts, {
      total: 2,
      succeeded: 1,
      failed: 1,
      invalid_lines: 1,
      by_type: { web: { total: 1, succeeded: 1, failed: 0 }, code: { total: 1, succeeded: 0, failed: 1 } },
      by_error_type: { timeout: 1 },
    });
    assert.deepEqual(s.cache, { hits: 1, misses: 1 });
    assert.equal(s.durations.max_task_seconds, 4);
  });
});
