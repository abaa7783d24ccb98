import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Context } from '@temporalio/activity';
import { CancelledFailure } from '@temporalio/common';
import type { ActivityExecuteInput } from '@temporalio/worker';
import { ConfigError, loadConfig, metricsPortFor } from '../../src/config';
import { activityMetricsInterceptor } from '../../src/metrics/activity-metrics-interceptor';
import {
  BridgeMetrics,
  caseStatusLabel,
  createMetricsRegistry,
  errorCodeLabel,
  WorkerMetrics,
} from '../../src/metrics/orchestrator-metrics';
import { parseExposition } from '../support/prometheus-text';

const bare = () => createMetricsRegistry({ defaultMetrics: false });

async function exposition(metrics: { registry: { metrics(): Promise<string> } }) {
  return parseExposition(await metrics.registry.metrics());
}

/** Just what the interceptor reads of an activity's Context. */
function fakeContext(
  activityType: string,
  opts: { aborted?: boolean; scheduledAgoMs?: number } = {},
): Context {
  const controller = new AbortController();
  if (opts.aborted) controller.abort();
  const info = { activityType, currentAttemptScheduledTimestampMs: Date.now() - (opts.scheduledAgoMs ?? 0) };
  // Only the two fields above are read; a full Context needs a running worker.
  return { info, cancellationSignal: controller.signal } as unknown as Context;
}

const NAMES = ['prepareRun', 'cancelRun', 'executeCase', 'finalizeCase'];
const INPUT: ActivityExecuteInput = { args: [], headers: {} };

async function execute(metrics: WorkerMetrics, ctx: Context, run: () => Promise<unknown>): Promise<unknown> {
  const execute = activityMetricsInterceptor(metrics, NAMES)(ctx).inbound?.execute;
  assert.ok(execute);
  return execute(INPUT, () => run());
}

describe('label guards', () => {
  test('final case statuses pass, anything else is "other"', () => {
    for (const s of ['success', 'failed', 'timeout', 'canceled']) assert.equal(caseStatusLabel(s), s);
    for (const s of ['running', 'pending', '', 42, null, 'case-901'])
      assert.equal(caseStatusLabel(s), 'other');
  });

  test('error codes pass only as E_ constants', () => {
    assert.equal(errorCodeLabel('E_MESSAGE_INVALID_JSON'), 'E_MESSAGE_INVALID_JSON');
    for (const c of ['E_', 'bad', 'E_lower', `E_${'X'.repeat(80)}`, 'E_MESSAGE_PROCESS: detail'])
      assert.equal(errorCodeLabel(c), 'E_OTHER');
  });
});

describe('activity metrics interceptor', () => {
  test('a completed finalizeCase counts one attempt and one finished case by its status', async () => {
    const metrics = new WorkerMetrics(bare());
    const result = await execute(
      metrics,
      fakeContext('finalizeCase', { scheduledAgoMs: 1500 }),
      async () => ({
        status: 'timeout',
        errorMessage: 'E_CASE_TIMEOUT',
        persisted: true,
      }),
    );
    assert.deepEqual(
      result,
      { status: 'timeout', errorMessage: 'E_CASE_TIMEOUT', persisted: true },
      'the result passes through unchanged',
    );
    const m = await exposition(metrics);
    assert.equal(
      m.value('agentbench_activity_executions_total', { activity: 'finalizeCase', outcome: 'completed' }),
      1,
    );
    assert.equal(
      m.value('agentbench_activity_duration_seconds_count', {
        activity: 'finalizeCase',
        outcome: 'completed',
      }),
      1,
    );
    assert.equal(m.value('agentbench_activities_in_flight', { activity: 'finalizeCase' }), 0);
    assert.equal(m.value('agentbench_cases_finished_total', { status: 'timeout' }), 1);
    // Scheduled 1.5 s before it started: lands above the 1 s bucket, within 2.5 s.
    assert.equal(
      m.value('agentbench_activity_schedule_to_start_seconds_bucket', { activity: 'finalizeCase', le: '1' }),
      0,
    );
    assert.equal(
      m.value('agentbench_activity_schedule_to_start_seconds_bucket', {
        activity: 'finalizeCase',
        le: '2.5',
      }),
      1,
    );
  });

  test('cancelRun and a failed-before-start prepareRun count their cases; a normal prepareRun counts none', async () => {
    const metrics = new WorkerMetrics(bare());
    await execute(metrics, fakeContext('cancelRun'), async () => 3);
    await execute(metrics, fakeContext('prepareRun'), async () => ({
      failure: 'E_SANDBOX_RUNTIME_SPEC_INVALID',
      failedCases: 4,
    }));
    await execute(metrics, fakeContext('prepareRun'), async () => ({}));
    const m = await exposition(metrics);
    assert.equal(m.value('agentbench_cases_finished_total', { status: 'canceled' }), 3);
    assert.equal(m.value('agentbench_cases_finished_total', { status: 'failed' }), 4);
    assert.equal(
      m.value('agentbench_activity_executions_total', { activity: 'prepareRun', outcome: 'completed' }),
      2,
    );
  });

  test('a throwing activity is "failed", a cancelled one "canceled"; the error still reaches Temporal', async () => {
    const metrics = new WorkerMetrics(bare());
    const boom = new Error('E_DOCKER_CREATE: daemon gone');
    await assert.rejects(
      execute(metrics, fakeContext('executeCase'), async () => Promise.reject(boom)),
      (err) => err === boom,
    );
    await assert.rejects(
      execute(metrics, fakeContext('executeCase'), async () =>
        Promise.reject(new CancelledFailure('cancelled')),
      ),
    );
    await assert.rejects(
      execute(metrics, fakeContext('executeCase', { aborted: true }), async () =>
        Promise.reject(new Error('aborted')),
      ),
    );
    const m = await exposition(metrics);
    assert.equal(
      m.value('agentbench_activity_executions_total', { activity: 'executeCase', outcome: 'failed' }),
      1,
    );
    assert.equal(
      m.value('agentbench_activity_executions_total', { activity: 'executeCase', outcome: 'canceled' }),
      2,
    );
    assert.equal(m.value('agentbench_activities_in_flight', { activity: 'executeCase' }), 0);
    assert.equal(
      m.series('agentbench_cases_finished_total').length,
      0,
      'no case finished by a failed attempt',
    );
  });

  test('an unregistered activity type is labelled "other"; a malformed result counts no case', async () => {
    const metrics = new WorkerMetrics(bare());
    await execute(metrics, fakeContext('somethingNew'), async () => 1);
    await execute(metrics, fakeContext('finalizeCase'), async () => ({ unexpected: true }));
    const m = await exposition(metrics);
    assert.equal(
      m.value('agentbench_activity_executions_total', { activity: 'other', outcome: 'completed' }),
      1,
    );
    assert.equal(m.series('agentbench_cases_finished_total').length, 0);
  });
});

describe('gauges read their sources at scrape time', () => {
  test('worker slots are summed over attached workers and vanish once detached', async () => {
    const metrics = new WorkerMetrics(bare());
    const a = metrics.observeWorker({
      dockerOperations: { inUse: 2, waiting: 5 },
      dockerOperationsLimit: 4,
      liveContainers: { inUse: 1, waiting: 0 },
      liveContainersLimit: 16,
    });
    metrics.observeWorker({
      dockerOperations: { inUse: 1, waiting: 0 },
      dockerOperationsLimit: 4,
      liveContainers: { inUse: 3, waiting: 1 },
      liveContainersLimit: 16,
    });
    let m = await exposition(metrics);
    assert.equal(m.value('agentbench_docker_operations_in_use'), 3);
    assert.equal(m.value('agentbench_docker_operations_waiting'), 5);
    assert.equal(m.value('agentbench_docker_operations_limit'), 8);
    assert.equal(m.value('agentbench_live_containers'), 4);
    assert.equal(m.value('agentbench_live_containers_waiting'), 1);
    a();
    m = await exposition(metrics);
    assert.equal(m.value('agentbench_live_containers'), 3);
    assert.equal(m.value('agentbench_live_containers_limit'), 16);
  });

  test('bridge state gauges follow the bridge; counters carry only bounded labels', async () => {
    const metrics = new BridgeMetrics(bare());
    const state = { connected: false, degraded: true, inFlight: 2 };
    metrics.observeBridge({
      connected: () => state.connected,
      redisDegraded: () => state.degraded,
      deliveriesInFlight: () => state.inFlight,
    });
    let m = await exposition(metrics);
    assert.equal(m.value('agentbench_bridge_connected'), 0);
    assert.equal(m.value('agentbench_bridge_redis_degraded'), 1);
    assert.equal(m.value('agentbench_bridge_deliveries_in_flight'), 2);
    state.connected = true;
    state.degraded = false;
    metrics.deadLetter('E_MESSAGE_SCHEMA_INVALID');
    metrics.deadLetter('E_MESSAGE_PROCESS: something with an id 901');
    metrics.duplicate('workflow_exists');
    m = await exposition(metrics);
    assert.equal(m.value('agentbench_bridge_connected'), 1);
    assert.equal(m.value('agentbench_bridge_redis_degraded'), 0);
    assert.equal(m.value('agentbench_bridge_dead_lettered_total', { code: 'E_MESSAGE_SCHEMA_INVALID' }), 1);
    assert.equal(m.value('agentbench_bridge_dead_lettered_total', { code: 'E_OTHER' }), 1);
    assert.equal(m.value('agentbench_bridge_duplicates_total', { reason: 'workflow_exists' }), 1);
    assert.equal(m.types.get('agentbench_bridge_messages_received_total'), 'counter');
  });

  test('the default registry carries the process and Node.js metrics', async () => {
    const m = parseExposition(await createMetricsRegistry().metrics());
    assert.equal(m.types.get('process_cpu_user_seconds_total'), 'counter');
    assert.ok(m.types.has('nodejs_heap_size_total_bytes'));
  });
});

describe('metrics configuration', () => {
  test('METRICS_PORT unset: the command default (worker 9464, bridge 9465); set: that port; 0 disables', () => {
    const unset = loadConfig({});
    assert.deepEqual([metricsPortFor(unset, 'worker'), metricsPortFor(unset, 'bridge')], [9464, 9465]);
    assert.equal(unset.metrics.host, '0.0.0.0');
    assert.equal(unset.metrics.temporalPort, 0, 'the Temporal core exporter is off unless asked for');
    const set = loadConfig({
      METRICS_PORT: '9100',
      METRICS_HOST: '127.0.0.1',
      TEMPORAL_METRICS_PORT: '9466',
    });
    assert.deepEqual([metricsPortFor(set, 'worker'), metricsPortFor(set, 'bridge')], [9100, 9100]);
    assert.deepEqual(set.metrics, { port: 9100, host: '127.0.0.1', temporalPort: 9466 });
    assert.equal(metricsPortFor(loadConfig({ METRICS_PORT: '0' }), 'worker'), 0);
    assert.equal(
      metricsPortFor(loadConfig({ METRICS_PORT: ' ' }), 'bridge'),
      9465,
      'blank is unset, as everywhere',
    );
  });

  test('a malformed port stops start-up naming the variable', () => {
    for (const [variable, value] of [
      ['METRICS_PORT', '65536'],
      ['METRICS_PORT', 'http'],
      ['TEMPORAL_METRICS_PORT', '-1'],
    ] as const) {
      assert.throws(
        () => loadConfig({ [variable]: value }),
        (err: unknown) =>
          err instanceof ConfigError && err.variable === variable && err.message.includes(variable),
      );
    }
  });
});
