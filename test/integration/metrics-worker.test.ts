import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { DockerSandbox } from '../../src/docker/docker-sandbox';
import { Semaphore } from '../../src/docker/semaphore';
import type { ExperimentRunResult } from '../../src/domain/experiment-run';
import { parseExperimentMessage } from '../../src/domain/message';
import { createLogger } from '../../src/logger';
import { MeteredOrphanReaper } from '../../src/metrics/metered-orphan-reaper';
import { MetricsServer } from '../../src/metrics/metrics-server';
import { createMetricsRegistry, WorkerMetrics } from '../../src/metrics/orchestrator-metrics';
import { OtelCollector } from '../../src/otel/otel-collector';
import { createCaseWorker, type CaseWorker } from '../../src/temporal/case-worker';
import { startExperimentRun } from '../../src/temporal/run-starter';
import { seedExperiment } from '../support/database';
import { buildPlatformMessage } from '../support/platform';
import { httpGet, parseExposition, scrape, type Exposition } from '../support/prometheus-text';
import { managedContainers, startStack, type Stack } from '../support/stack';
import { baseSpec, newTestRunId, removeTestContainers } from './docker-fixtures';

const exec = promisify(execFile);

/** Every label any agentbench_ worker series may carry: all bounded. */
const ALLOWED_LABELS = new Set(['activity', 'outcome', 'status', 'signal', 'le']);

function assertBoundedLabels(m: Exposition, ids: string[]): void {
  for (const s of m.samples.filter((x) => x.name.startsWith('agentbench_'))) {
    for (const [key, value] of Object.entries(s.labels)) {
      assert.ok(ALLOWED_LABELS.has(key), `${s.name} has an unexpected label ${key}`);
      assert.ok(!ids.includes(value), `${s.name}{${key}="${value}"} carries an id`);
    }
  }
}

/**
 * The worker's /metrics after a real run: Temporal dev server, Docker containers that post OTLP
 * spans to the worker's collector, Postgres. Counters must have moved by exactly what ran.
 */
describe('worker metrics over HTTP (Temporal + Docker + Postgres)', () => {
  const log = createLogger({ level: 'silent' });
  const runId = newTestRunId();
  const workflowIds: string[] = [];
  let stack: Stack;
  let metrics: WorkerMetrics;
  let worker: CaseWorker;
  let running: Promise<void>;
  let server: MetricsServer;
  let url: string;

  before(async () => {
    // Idempotent; builds bench/otel-manual-agent only when it is missing.
    await exec('bash', [path.resolve(__dirname, '../../scripts/build-images')], { timeout: 900_000 });
    stack = await startStack({ worker: false, log, env: { CONSUMER_CONCURRENT_CASES: '2' } });
    metrics = new WorkerMetrics(createMetricsRegistry());
    worker = await createCaseWorker({
      config: stack.config,
      log,
      pool: stack.db.pool,
      docker: stack.docker,
      client: stack.client,
      taskQueue: stack.taskQueue,
      metrics,
    });
    running = worker.run();
    server = new MetricsServer({ registry: metrics.registry, log, host: '127.0.0.1', port: 0 });
    url = `http://127.0.0.1:${(await server.start()).port}/metrics`;
  });

  after(async () => {
    await worker?.shutdown();
    await running;
    await server?.stop();
    await removeTestContainers(stack.docker, runId);
    if (stack)
      assert.deepEqual(
        await managedContainers(stack.docker, workflowIds),
        [],
        'no container of ours is left',
      );
    await stack?.stop();
  });

  test('a run of one succeeding and one failing case, each posting 2 spans, moves every counter by exactly that', async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: 2 });
    const message = buildPlatformMessage(seeded, {
      queue: 'direct',
      userInput: (i) => (i === 0 ? 'ok' : 'fail'),
      runtimeSpec: {
        agent_image: 'bench/otel-manual-agent:latest',
        pull_policy: 'if-not-present',
        sandbox_start_command: 'sleep infinity',
        // Both post their spans with the injected token; the second then exits 1 (E_AGENT_EXIT_NON_ZERO).
        case_exec_command:
          'python3 /agent/post_spans.py {{mock.base_url}} {{run_case.run_case_id}} {{experiment.id}} && [ "$BENCHMARK_USER_INPUT" = ok ]',
      },
    });
    const parsed = parseExperimentMessage(JSON.stringify(message));
    assert.ok(parsed.ok);
    const before = await scrape(url);
    assert.equal(before.value('agentbench_cases_finished_total', { status: 'success' }), undefined);

    const { workflowId } = await startExperimentRun(
      { client: stack.client, pool: stack.db.pool, config: stack.config, log },
      parsed.message,
      parsed.message.message_id,
    );
    workflowIds.push(workflowId);
    const result = (await stack.client.workflow.getHandle(workflowId).result()) as ExperimentRunResult;
    assert.equal(result.outcome, 'completed');
    assert.deepEqual([result.progress.success, result.progress.failed], [1, 1]);

    const m = await scrape(url);
    assert.equal(m.value('agentbench_cases_finished_total', { status: 'success' }), 1);
    assert.equal(m.value('agentbench_cases_finished_total', { status: 'failed' }), 1);
    assert.equal(m.value('agentbench_cases_finished_total', { status: 'timeout' }), undefined);
    // No judge to call: each container phase finishes its case itself (the fast path), so no
    // collectTrajectory/finalizeCase activity runs and the finished cases are counted from executeCase.
    for (const activity of ['collectTrajectory', 'finalizeCase']) {
      assert.equal(
        m.value('agentbench_activity_executions_total', { activity, outcome: 'completed' }),
        undefined,
        activity,
      );
    }
    for (const [activity, n] of [
      ['prepareRun', 1],
      ['executeCase', 2],
    ] as const) {
      assert.equal(
        m.value('agentbench_activity_executions_total', { activity, outcome: 'completed' }),
        n,
        activity,
      );
      assert.equal(
        m.value('agentbench_activity_duration_seconds_count', { activity, outcome: 'completed' }),
        n,
        activity,
      );
      assert.equal(m.value('agentbench_activity_schedule_to_start_seconds_count', { activity }), n, activity);
      assert.equal(m.value('agentbench_activities_in_flight', { activity }), 0, activity);
    }
    assert.equal(
      m.value('agentbench_activity_executions_total', { activity: 'executeCase', outcome: 'failed' }),
      undefined,
      'an agent failure is a result, not a failed attempt',
    );
    // A container phase includes create/start/exec/remove: never below 100 ms, and bucketed.
    assert.ok(
      (m.value('agentbench_activity_duration_seconds_sum', {
        activity: 'executeCase',
        outcome: 'completed',
      }) ?? 0) > 0.1,
    );
    assert.equal(
      m.value('agentbench_activity_duration_seconds_bucket', {
        activity: 'executeCase',
        outcome: 'completed',
        le: '+Inf',
      }),
      2,
    );

    assert.equal(m.value('agentbench_otel_ingest_requests_total', { signal: 'traces', status: '200' }), 2);
    assert.equal(m.value('agentbench_otel_records_stored_total', { signal: 'traces' }), 4);

    assert.equal(m.value('agentbench_live_containers'), 0);
    assert.equal(m.value('agentbench_live_containers_waiting'), 0);
    assert.equal(m.value('agentbench_live_containers_limit'), stack.config.docker.maxLiveContainers);
    assert.equal(m.value('agentbench_docker_operations_in_use'), 0);
    assert.equal(m.value('agentbench_docker_operations_limit'), stack.config.docker.maxConcurrentOperations);
    assert.equal(m.types.get('agentbench_activity_duration_seconds'), 'histogram');
    assert.ok(m.types.has('process_resident_memory_bytes'), 'default process metrics are served too');

    const ids = [
      String(seeded.experimentId),
      workflowId,
      parsed.message.message_id,
      ...seeded.runCaseIds.map(String),
    ];
    assertBoundedLabels(m, ids);
    assert.ok(
      !m.samples.some((s) => Object.values(s.labels).some((v) => v.startsWith('case-'))),
      'never labelled by activity id',
    );
  });

  test('the collector hook counts refusals by signal and status, and stores nothing for them', async () => {
    const local = new WorkerMetrics(createMetricsRegistry({ defaultMetrics: false }));
    const collector = new OtelCollector({
      pool: stack.db.pool,
      log,
      host: '127.0.0.1',
      port: 0,
      maxBodyBytes: 1024 * 1024,
      allowUntokened: false,
      onIngest: (event) => local.otelIngest(event),
    });
    const { port } = await collector.start();
    try {
      const token = collector.issueToken({ runCaseId: 7, experimentId: 1, dataItemId: 1 });
      const post = (p: string, body: string, method = 'POST', headers: Record<string, string> = {}) =>
        fetch(`http://127.0.0.1:${port}${p}`, {
          method,
          headers: { 'content-type': 'application/json', ...headers },
          ...(method === 'POST' ? { body } : {}),
        });
      const claim = JSON.stringify({
        resourceSpans: [
          {
            resource: { attributes: [{ key: 'benchmark.run_case_id', value: { stringValue: '7' } }] },
            scopeSpans: [
              {
                spans: [
                  {
                    traceId: '0af7651916cd43dd8448eb211c80319c',
                    spanId: 'b7ad6b7169203331',
                    name: 'x',
                    startTimeUnixNano: '1',
                    endTimeUnixNano: '2',
                  },
                ],
              },
            ],
          },
        ],
      });
      assert.equal((await post('/v1/traces', claim)).status, 401, 'a claim without the case token');
      assert.equal(
        (await post('/api/otel/v1/logs', '{}', 'POST', { 'x-agentbench-ingest-token': token })).status,
        200,
        'an empty document',
      );
      assert.equal((await post('/v1/logs', '', 'GET')).status, 405);
      assert.equal((await post('/v1/metrics', '{}')).status, 404);

      const m = parseExposition(await local.registry.metrics());
      assert.equal(m.value('agentbench_otel_ingest_requests_total', { signal: 'traces', status: '401' }), 1);
      assert.equal(m.value('agentbench_otel_ingest_requests_total', { signal: 'logs', status: '200' }), 1);
      assert.equal(m.value('agentbench_otel_ingest_requests_total', { signal: 'logs', status: '405' }), 1);
      assert.equal(m.value('agentbench_otel_ingest_requests_total', { signal: 'unknown', status: '404' }), 1);
      assert.equal(m.series('agentbench_otel_records_stored_total').length, 0);
    } finally {
      await collector.stop();
    }
  });

  test('orphan containers removed by a sweep are counted; the worker runs the metered reaper', async () => {
    assert.ok(worker.reaper instanceof MeteredOrphanReaper);
    const local = new WorkerMetrics(createMetricsRegistry({ defaultMetrics: false }));
    // A deployment of this test's own: other test runs' containers on this daemon are never judged.
    const deploymentId = `test-${runId}`;
    const sandbox = new DockerSandbox(stack.docker, new Semaphore(2), log, { deploymentId });
    await sandbox.createAndStart(baseSpec(runId));
    const reaper = new MeteredOrphanReaper(
      {
        sandbox,
        log,
        deploymentId,
        minAgeSeconds: 0,
        judge: async () => ({ verdict: 'orphan', reason: 'test' }),
      },
      local,
    );
    const swept = await reaper.sweep();
    assert.equal(swept.removed.length, 1);
    assert.equal(
      parseExposition(await local.registry.metrics()).value('agentbench_orphan_containers_reaped_total'),
      1,
    );
    assert.equal((await reaper.sweep()).removed.length, 0);
    assert.equal(
      parseExposition(await local.registry.metrics()).value('agentbench_orphan_containers_reaped_total'),
      1,
    );
  });

  test('the served exposition is what the registry holds, in the Prometheus text format', async () => {
    const res = await httpGet(url);
    assert.equal(res.status, 200);
    assert.match(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    const m = parseExposition(res.body);
    for (const family of [
      'agentbench_cases_finished_total',
      'agentbench_activity_executions_total',
      'agentbench_live_containers',
      'agentbench_orphan_containers_reaped_total',
    ]) {
      assert.ok(m.types.has(family), family);
    }
  });
});
