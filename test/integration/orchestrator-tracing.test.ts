import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import amqp from 'amqplib';
import { context, propagation, trace } from '@opentelemetry/api';
import { amqpUrl, loadConfig, type Config } from '../../src/config';
import { startBridge, type BridgeHandle } from '../../bridge/experiment-bridge';
import { deadLetterQueueName } from '../../bridge/dead-letter';
import type { ExperimentRunResult } from '../../src/domain/experiment-run';
import { workflowIdForRun } from '../../src/domain/experiment-run';
import { parseExperimentMessage } from '../../src/domain/message';
import { decodeAttributes } from '../../src/domain/otlp-attributes';
import { decodeOtlpProtobuf } from '../../src/otel/otlp-protobuf';
import { createMetricsRegistry, WorkerMetrics } from '../../src/metrics/orchestrator-metrics';
import { createCaseWorker, type CaseWorker } from '../../src/temporal/case-worker';
import { connectTemporalClient } from '../../src/temporal/connection';
import { fetchWorkflowHistories, readHistoryFile, replayHistories } from '../../src/temporal/history-replay';
import { startExperimentRun } from '../../src/temporal/run-starter';
import {
  SHUTDOWN_BUDGET_MS,
  startOrchestratorTracing,
  type OrchestratorTracing,
} from '../../src/tracing/orchestrator-tracing';
import { bundleHasTracingInterceptors, workerTracingOptions } from '../../src/tracing/temporal-tracing';
import { seedExperiment, type SeededExperiment } from '../support/database';
import { openAiReply, startLlmJudgeServer, type LlmJudgeServer } from '../support/llm-judge-server';
import { buildPlatformMessage } from '../support/platform';
import { parseExposition } from '../support/prometheus-text';
import { captureLogger, eventually, managedContainers, startStack, type Stack } from '../support/stack';

/**
 * OpenTelemetry traces of the orchestrator itself, against the real chain: RabbitMQ → bridge →
 * Temporal dev server → worker → Docker → Postgres, spans exported over OTLP/HTTP protobuf to a
 * receiver in this process. One run must be one trace: delivery → StartWorkflow → RunWorkflow →
 * StartActivity → RunActivity per case phase, with the case ids on it and no secret anywhere.
 * Workers run both ways: bundling the workflow code themselves, and from a prebuilt bundle
 * (`scripts/bundle-workflows.ts --with-tracing`, as deploy/Dockerfile builds it).
 */

const execFileAsync = promisify(execFile);

// ---- an OTLP/HTTP receiver ------------------------------------------------------------------

interface ReceivedExport {
  path: string;
  headers: http.IncomingHttpHeaders;
  doc: unknown;
}

interface OtlpReceiver {
  url: string;
  exports: ReceivedExport[];
  close(): Promise<void>;
}

/** `hang`: accept and never answer (a collector that is down but reachable). */
async function startReceiver(opts: { hang?: boolean } = {}): Promise<OtlpReceiver> {
  const exports: ReceivedExport[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (opts.hang) return;
      const body = Buffer.concat(chunks);
      try {
        assert.equal(req.headers['content-type'], 'application/x-protobuf');
        exports.push({ path: req.url ?? '', headers: req.headers, doc: decodeOtlpProtobuf('traces', body) });
        // An empty ExportTraceServiceResponse is zero bytes.
        res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
      } catch (err) {
        res.writeHead(400).end(String(err));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    exports,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

interface ReceivedSpan {
  service: unknown;
  resource: Record<string, unknown>;
  traceId: string;
  spanId: string;
  parentSpanId: string | undefined;
  name: string;
  kind: unknown;
  attributes: Record<string, unknown>;
}

type Obj = Record<string, unknown>;
const list = (v: unknown): Obj[] => (Array.isArray(v) ? (v as Obj[]) : []);

function spansOf(exports: readonly ReceivedExport[]): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  for (const e of exports) {
    for (const rs of list((e.doc as Obj).resourceSpans)) {
      const resource = decodeAttributes(list((rs.resource as Obj | undefined)?.attributes));
      for (const ss of list(rs.scopeSpans)) {
        for (const s of list(ss.spans)) {
          out.push({
            service: resource['service.name'],
            resource,
            traceId: String(s.traceId),
            spanId: String(s.spanId),
            parentSpanId:
              typeof s.parentSpanId === 'string' && s.parentSpanId !== '' ? s.parentSpanId : undefined,
            name: String(s.name),
            kind: s.kind,
            attributes: decodeAttributes(list(s.attributes)),
          });
        }
      }
    }
  }
  return out;
}

function one(spans: readonly ReceivedSpan[], what: string, pred: (s: ReceivedSpan) => boolean): ReceivedSpan {
  const found = spans.filter(pred);
  assert.equal(found.length, 1, `exactly one ${what}, got ${found.map((s) => s.name).join(', ') || 'none'}`);
  return found[0] as ReceivedSpan;
}

/** The trace as an indented tree (names, services, case ids), for the test's diagnostics. */
function traceTree(spans: readonly ReceivedSpan[]): string[] {
  const ids = new Set(spans.map((s) => s.spanId));
  const children = (parent: string | undefined) =>
    spans.filter((s) =>
      parent === undefined ? !s.parentSpanId || !ids.has(s.parentSpanId) : s.parentSpanId === parent,
    );
  const lines: string[] = [];
  const walk = (s: ReceivedSpan, depth: number) => {
    const caseId = s.attributes['benchmark.run_case_id'];
    lines.push(
      `${'  '.repeat(depth)}${s.name} [${String(s.service)}]${caseId ? ` case ${String(caseId)}` : ''}`,
    );
    for (const c of children(s.spanId)) walk(c, depth + 1);
  };
  for (const root of children(undefined)) walk(root, 0);
  return lines;
}

// ---- the suite ------------------------------------------------------------------------------

const STRAY_ENV = {
  // What a pod might carry for some other OTel consumer: none of it may reach or steer our export.
  OTEL_EXPORTER_OTLP_HEADERS: 'x-stray=stray-SECRET-0d1f',
  OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'x-stray-traces=stray-SECRET-0d1f',
  OTEL_TRACES_EXPORTER: 'otlp',
  OTEL_TRACES_SAMPLER: 'always_off',
  OTEL_PROPAGATORS: 'b3',
  OTEL_SERVICE_NAME: 'stray-service',
  OTEL_RESOURCE_ATTRIBUTES: 'stray.attr=1',
  OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT: '1',
  OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '1',
};

describe('orchestrator traces over OTLP (RabbitMQ + Temporal + Docker + Postgres)', () => {
  const { log, lines } = captureLogger('info');
  const queue = `agentbench.tracing.${randomBytes(4).toString('hex')}`;
  const apiKey = `sk-trace-SECRET-${randomBytes(6).toString('hex')}`;
  const exportToken = `trace-token-SECRET-${randomBytes(6).toString('hex')}`;
  const workflowIds: string[] = [];
  const savedEnv = new Map<string, string | undefined>();
  let stack: Stack;
  let judge: LlmJudgeServer;
  /** Gets every export of the traced run. */
  let receiver: OtlpReceiver;
  /** Named by the stray OTEL_EXPORTER_OTLP_ENDPOINT while tracing is off: must never hear a word. */
  let strayReceiver: OtlpReceiver;
  const tracedBundle = path.join(tmpdir(), `agentbench-tracing-bundle-${process.pid}.js`);

  /** A worker of its own on its own task queue; `config` decides tracing and the bundle. */
  async function withWorker<T>(
    config: Config,
    tracing: OrchestratorTracing | null,
    fn: () => Promise<T>,
    metrics?: WorkerMetrics,
  ): Promise<T> {
    const worker = await createCaseWorker({
      config,
      log,
      pool: stack.db.pool,
      docker: stack.docker,
      client: stack.client,
      tracing,
      metrics,
    });
    const running = worker.run();
    try {
      return await fn();
    } finally {
      await worker.shutdown();
      await running;
    }
  }

  function configWith(extra: Record<string, string>): Config {
    return loadConfig({
      ...stack.env,
      TEMPORAL_TASK_QUEUE: `${stack.taskQueue}-${randomBytes(3).toString('hex')}`,
      ...extra,
    });
  }

  before(async () => {
    receiver = await startReceiver();
    strayReceiver = await startReceiver();
    judge = await startLlmJudgeServer();
    for (const [k, v] of Object.entries({ ...STRAY_ENV, OTEL_EXPORTER_OTLP_ENDPOINT: strayReceiver.url })) {
      savedEnv.set(k, process.env[k]);
      process.env[k] = v;
    }
    // Workers are started per test (withWorker); the stack's env has no ORCHESTRATOR_OTLP_ENDPOINT.
    stack = await startStack({
      log,
      worker: false,
      env: { RABBITMQ_EXPERIMENT_QUEUE: queue, CONSUMER_CONCURRENT_CASES: '2' },
    });
    await execFileAsync(
      process.execPath,
      [
        '--import',
        'tsx',
        path.resolve(__dirname, '../../scripts/bundle-workflows.ts'),
        tracedBundle,
        '--with-tracing',
      ],
      { timeout: 300_000 },
    );
  });

  after(async () => {
    for (const [k, v] of savedEnv) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    if (stack) {
      const conn = await amqp.connect(amqpUrl(stack.config));
      const ch = await conn.createChannel();
      await ch.deleteQueue(queue);
      await ch.deleteQueue(deadLetterQueueName(queue));
      await conn.close();
      assert.deepEqual(
        await managedContainers(stack.docker, workflowIds),
        [],
        'no container of ours is left',
      );
      await stack.stop();
    }
    await judge?.close();
    await receiver?.close();
    await strayReceiver?.close();
    await rm(tracedBundle, { force: true });
  });

  async function judgedMessage(seeded: SeededExperiment) {
    const evaluatorId = seeded.evaluatorIds[0] as number;
    const baseUrl = `${judge.origin}/judge/v1/chat/completions`;
    await stack.db.pool.query(
      `UPDATE evaluators SET api_key = $2, base_url = $3, model_name = 'judge-model' WHERE id = $1`,
      [evaluatorId, apiKey, baseUrl],
    );
    return buildPlatformMessage(seeded, {
      queue,
      runtimeSpec: {
        agent_image: 'bench/busybox:latest',
        pull_policy: 'if-not-present',
        sandbox_start_command: 'sleep infinity',
        case_exec_command: `echo '{"output":"4"}'`,
      },
      scorers: [
        {
          id: String(evaluatorId),
          scorer_key: 'task_success',
          name: 'Task success',
          scorer_config: {
            prompt_template: 'Input: {{data_item.input}} Output: {{run.output}}',
            base_url: baseUrl,
            model_name: 'judge-model',
            api_style: 'openai',
            api_key: apiKey,
          },
        },
      ],
    });
  }

  test('without ORCHESTRATOR_OTLP_ENDPOINT nothing is created, nothing registered, and a run exports nothing (also from a --with-tracing bundle)', async () => {
    let exportersCreated = 0;
    const off = startOrchestratorTracing(stack.config, {
      service: 'agentbench-worker',
      log,
      createExporter: () => {
        exportersCreated += 1;
        throw new Error('no exporter may be created without an endpoint');
      },
    });
    assert.equal(off, null);
    assert.equal(exportersCreated, 0);
    assert.equal(
      stack.config.tracing.endpoint,
      undefined,
      'the standard OTEL_EXPORTER_OTLP_ENDPOINT does not switch it on',
    );

    judge.script('/judge/v1/chat/completions', { json: openAiReply('{"score":0.9,"reason":"ok"}') });
    const seeded = await seedExperiment(stack.db.pool, { cases: 1, evaluators: 1 });
    const parsed = parseExperimentMessage(JSON.stringify(await judgedMessage(seeded)));
    assert.ok(parsed.ok);
    assert.equal(await bundleHasTracingInterceptors(tracedBundle), true);
    // The image's bundle has the interceptors: with tracing off their spans must go nowhere, quietly.
    const config = configWith({ WORKFLOW_BUNDLE_PATH: tracedBundle });
    const result = await withWorker(config, off, async () => {
      const { workflowId } = await startExperimentRun(
        { client: stack.client, pool: stack.db.pool, config, log },
        parsed.message,
        parsed.message.message_id,
      );
      workflowIds.push(workflowId);
      return (await stack.client.workflow.getHandle(workflowId).result()) as ExperimentRunResult;
    });
    assert.equal(result.outcome, 'completed');
    assert.ok(
      !lines.some((l) => /unregistered external sink/i.test(String(l.msg))),
      'the exporter sink is registered (as a no-op)',
    );
    // No SDK tracer provider exists anywhere in the process: spans of the global API do not record.
    assert.equal(trace.getTracer('probe').startSpan('probe').isRecording(), false);
    // strayReceiver stays silent: checked after the traced run, once seconds have passed.
  });

  test('a run published to the queue is one trace from the delivery to every case phase', async (t) => {
    const tracedQueue = `${stack.taskQueue}-traced`;
    const config: Config = loadConfig({
      ...stack.env,
      TEMPORAL_TASK_QUEUE: tracedQueue,
      ORCHESTRATOR_OTLP_ENDPOINT: receiver.url,
      ORCHESTRATOR_OTLP_HEADERS: `Authorization=Bearer%20${exportToken}`,
    });
    // A bridge process and a worker process, side by side in this one.
    const bridgeTracing = startOrchestratorTracing(config, {
      service: 'agentbench-bridge',
      log,
    }) as OrchestratorTracing;
    const workerTracing = startOrchestratorTracing(config, {
      service: 'agentbench-worker',
      log,
    }) as OrchestratorTracing;
    assert.ok(bridgeTracing && workerTracing);
    const client = await connectTemporalClient(config, { tracing: bridgeTracing });
    let worker: CaseWorker | undefined;
    let running: Promise<void> | undefined;
    let bridge: BridgeHandle | undefined;
    try {
      worker = await createCaseWorker({
        config,
        log,
        pool: stack.db.pool,
        docker: stack.docker,
        client: stack.client,
        taskQueue: tracedQueue,
        tracing: workerTracing,
      });
      running = worker.run();
      bridge = await startBridge({
        amqpUrl: amqpUrl(config),
        queue,
        prefetch: 4,
        redis: null,
        log,
        tracer: bridgeTracing.tracer,
        startRun: (message, meta) =>
          startExperimentRun({ client, pool: stack.db.pool, config, log }, message, meta.dedupSuffix),
      });

      judge.script('/judge/v1/chat/completions', { json: openAiReply('{"score":0.93,"reason":"good"}') });
      const seeded = await seedExperiment(stack.db.pool, { cases: 2, evaluators: 1 });
      const message = await judgedMessage(seeded);
      const messageId = String(message.message_id);
      const workflowId = workflowIdForRun(seeded.experimentId, messageId);
      workflowIds.push(workflowId);
      // The platform's publisher, plus a W3C trace context as an instrumented publisher would send.
      const upstreamTrace = randomBytes(16).toString('hex');
      const upstreamSpan = randomBytes(8).toString('hex');
      const conn = await amqp.connect(amqpUrl(config));
      try {
        const ch = await conn.createConfirmChannel();
        await ch.assertQueue(queue, { durable: true });
        ch.sendToQueue(queue, Buffer.from(JSON.stringify(message)), {
          persistent: true,
          contentType: 'application/json',
          messageId,
          headers: { traceparent: `00-${upstreamTrace}-${upstreamSpan}-01` },
        });
        await ch.waitForConfirms();
      } finally {
        await conn.close();
      }

      const handle = await eventually(
        async () => {
          const h = stack.client.workflow.getHandle(workflowId);
          await h.describe();
          return h;
        },
        60_000,
        'the bridge to start the workflow',
      );
      const result = (await handle.result()) as ExperimentRunResult;
      assert.equal(result.outcome, 'completed');
      assert.equal(result.progress.success, 2);

      // Workflow spans leave through the sink after the run's last task; poll until the whole trace is in.
      const caseIds = seeded.runCaseIds.map(String);
      const phases = {
        run: 'executeCase',
        trajectory: 'collectTrajectory',
        score: 'scoreCase',
        finalize: 'finalizeCase',
      } as const;
      const spans = await eventually(
        async () => {
          await Promise.all([bridgeTracing.forceFlush(), workerTracing.forceFlush()]);
          const all = spansOf(receiver.exports);
          const runSpans = all.filter((s) => s.traceId === upstreamTrace);
          const complete =
            runSpans.some((s) => s.name === 'RunWorkflow:experimentRunWorkflow') &&
            caseIds.every((c) =>
              Object.keys(phases).every((p) =>
                runSpans.some(
                  (s) =>
                    s.attributes['benchmark.run_case_id'] === c && s.attributes['benchmark.case_phase'] === p,
                ),
              ),
            );
          return complete ? all : undefined;
        },
        60_000,
        'every span of the run',
      );

      // One trace: the publisher's, continued by the delivery span.
      const runSpans = spans.filter((s) => s.traceId === upstreamTrace);
      const ofThisRun = spans.filter((s) => s.attributes.temporalWorkflowId === workflowId);
      assert.ok(ofThisRun.length > 0);
      assert.deepEqual(
        ofThisRun.filter((s) => s.traceId !== upstreamTrace).map((s) => s.name),
        [],
        'no span of the run in another trace',
      );
      const byId = new Map(runSpans.map((s) => [s.spanId, s]));
      t.diagnostic("the run's trace:");
      for (const line of traceTree(runSpans)) t.diagnostic(line);

      const delivery = one(runSpans, 'delivery span', (s) => s.name === `${queue} process`);
      assert.equal(delivery.parentSpanId, upstreamSpan, 'the delivery continues the publisher’s trace');
      assert.equal(delivery.service, 'agentbench-bridge');
      assert.equal(delivery.kind, 5, 'SPAN_KIND_CONSUMER');
      assert.deepEqual(
        [
          delivery.attributes['messaging.system'],
          delivery.attributes['messaging.destination.name'],
          delivery.attributes['messaging.message.id'],
        ],
        ['rabbitmq', queue, messageId],
      );
      assert.equal(delivery.attributes['benchmark.experiment_id'], String(seeded.experimentId));
      assert.equal(delivery.attributes['benchmark.bridge.outcome'], 'started');

      const start = one(runSpans, 'StartWorkflow', (s) => s.name === 'StartWorkflow:experimentRunWorkflow');
      assert.equal(start.parentSpanId, delivery.spanId);
      assert.equal(start.service, 'agentbench-bridge');
      assert.equal(start.attributes['benchmark.experiment_id'], String(seeded.experimentId));

      const runWorkflow = one(runSpans, 'RunWorkflow', (s) => s.name === 'RunWorkflow:experimentRunWorkflow');
      assert.equal(runWorkflow.parentSpanId, start.spanId);
      assert.equal(runWorkflow.service, 'agentbench-worker');
      assert.equal(runWorkflow.attributes.temporalWorkflowId, workflowId);
      assert.equal(runWorkflow.attributes['benchmark.experiment_id'], String(seeded.experimentId));
      assert.equal(runWorkflow.attributes.workflowType, 'experimentRunWorkflow');
      assert.ok(
        !('memo' in runWorkflow.attributes) && !('searchAttributes' in runWorkflow.attributes),
        'WorkflowInfo objects are dropped',
      );

      for (const caseId of caseIds) {
        for (const [phase, activityType] of Object.entries(phases)) {
          const what = `case ${caseId} ${phase}`;
          const runActivity = one(
            runSpans,
            `RunActivity of ${what}`,
            (s) =>
              s.attributes['benchmark.run_case_id'] === caseId &&
              s.attributes['benchmark.case_phase'] === phase,
          );
          assert.equal(runActivity.name, `RunActivity:${activityType}`, what);
          assert.equal(runActivity.service, 'agentbench-worker', what);
          assert.equal(runActivity.attributes.temporalActivityId, `case-${caseId}/${phase}`, what);
          assert.equal(runActivity.attributes.temporalWorkflowId, workflowId, what);
          assert.equal(runActivity.attributes['benchmark.experiment_id'], String(seeded.experimentId), what);
          const startActivity = byId.get(runActivity.parentSpanId ?? '');
          assert.equal(startActivity?.name, `StartActivity:${activityType}`, `${what}: parent`);
          assert.equal(startActivity?.parentSpanId, runWorkflow.spanId, `${what}: grandparent`);
        }
      }
      const prepare = one(runSpans, 'RunActivity:prepareRun', (s) => s.name === 'RunActivity:prepareRun');
      assert.equal(prepare.attributes['benchmark.experiment_id'], String(seeded.experimentId));
      assert.equal(prepare.attributes['benchmark.run_case_id'], undefined);
      assert.ok(
        !runSpans.some((s) => s.name.startsWith('HandleQuery:') || s.name.startsWith('QueryWorkflow:')),
        'polled queries are not traced',
      );

      // Every resource names its service, and nothing the environment claims leaked in.
      for (const s of spans) {
        assert.ok(
          s.service === 'agentbench-worker' || s.service === 'agentbench-bridge',
          `service.name of ${s.name}: ${String(s.service)}`,
        );
        assert.equal(s.resource['stray.attr'], undefined);
      }
      assert.ok(Object.keys(start.attributes).length > 1, 'OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT=1 is ignored');

      // Our headers on every export; the stray OTEL_EXPORTER_OTLP_*HEADERS never.
      assert.ok(receiver.exports.length > 0);
      for (const e of receiver.exports) {
        assert.equal(e.path, '/v1/traces');
        assert.equal(e.headers.authorization, `Bearer ${exportToken}`);
        assert.equal(e.headers['x-stray'], undefined);
        assert.equal(e.headers['x-stray-traces'], undefined);
      }

      // No secret in any exported document, nor in a log line about tracing.
      const exported = JSON.stringify(receiver.exports.map((e) => e.doc));
      for (const secret of [
        apiKey,
        exportToken,
        'stray-SECRET',
        stack.env.DATABASE_URL ?? 'unset',
        amqpUrl(config),
        stack.env.RABBITMQ_PASSWORD ? `:${stack.env.RABBITMQ_PASSWORD}@` : 'unset',
      ]) {
        assert.ok(!exported.includes(secret), `a secret (${secret.slice(0, 8)}…) is in the exported spans`);
      }
      assert.ok(
        !lines.some((l) => JSON.stringify(l).includes(exportToken)),
        'the export token in a log line',
      );
      assert.ok(
        lines.some((l) => l.code === 'TRACING_STARTED' && l.endpoint === `${receiver.url}/v1/traces`),
      );

      // Interceptors only add headers: the history carries the trace context and still replays,
      // with and without the tracing interceptors in the workflow code.
      const histories = await fetchWorkflowHistories(stack.client, workflowId);
      type Header = { header?: { fields?: Record<string, unknown> | null } | null } | null | undefined;
      const events = histories.flatMap(
        (h) =>
          (
            h.history as {
              events?: Array<{
                activityTaskScheduledEventAttributes?: Header;
                workflowExecutionStartedEventAttributes?: Header;
              }>;
            }
          ).events ?? [],
      );
      const traceHeader = (a: Header) => a?.header?.fields?.['_tracer-data'];
      const scheduled = events.filter((e) => e.activityTaskScheduledEventAttributes);
      assert.ok(scheduled.length >= 9, `${scheduled.length} activities scheduled`);
      assert.ok(
        scheduled.every((e) => traceHeader(e.activityTaskScheduledEventAttributes) !== undefined),
        'every scheduled activity carries the trace header',
      );
      assert.ok(
        traceHeader(events[0]?.workflowExecutionStartedEventAttributes) !== undefined,
        'the start carries the client span',
      );
      for (const tracing of [false, true]) {
        const replayed = await replayHistories(histories, undefined, { tracing });
        for (const r of replayed)
          assert.equal(r.error, undefined, `replay (tracing ${tracing}): ${r.error?.message}`);
      }
    } finally {
      await bridge?.stop();
      await worker?.shutdown();
      await running;
      await client.connection.close();
      await bridgeTracing.shutdown();
      await workerTracing.shutdown();
    }
    // Both shut down: the process-wide registrations are gone again.
    assert.equal(propagation.fields().length, 0, 'the W3C propagator is unregistered');
    assert.equal(trace.getSpan(context.active()), undefined);
  });

  test('a worker on a --with-tracing prebuilt bundle exports the workflow spans into the client’s trace', async () => {
    const exportsBefore = receiver.exports.length;
    const config = configWith({
      WORKFLOW_BUNDLE_PATH: tracedBundle,
      ORCHESTRATOR_OTLP_ENDPOINT: receiver.url,
    });
    // `benchctl run`: one process, one tracing, client and in-process worker.
    const tracing = startOrchestratorTracing(config, { service: 'agentbench-run', log });
    assert.ok(tracing);
    const client = await connectTemporalClient(config, { tracing });
    try {
      const seeded = await seedExperiment(stack.db.pool, { cases: 1 });
      const parsed = parseExperimentMessage(
        JSON.stringify(
          buildPlatformMessage(seeded, {
            queue: 'direct',
            runtimeSpec: {
              agent_image: 'bench/busybox:latest',
              pull_policy: 'if-not-present',
              sandbox_start_command: 'sleep infinity',
              case_exec_command: `echo '{"output":"4"}'`,
            },
          }),
        ),
      );
      assert.ok(parsed.ok);
      const caseId = String(seeded.runCaseIds[0]);
      // The metrics interceptor runs inside the tracing one: both must see every activity.
      const metrics = new WorkerMetrics(createMetricsRegistry({ defaultMetrics: false }));
      const workflowId = await withWorker(
        config,
        tracing,
        async () => {
          const r = await startExperimentRun(
            { client, pool: stack.db.pool, config, log },
            parsed.message,
            parsed.message.message_id,
          );
          workflowIds.push(r.workflowId);
          const result = (await client.workflow.getHandle(r.workflowId).result()) as ExperimentRunResult;
          assert.equal(result.outcome, 'completed');
          assert.equal(result.progress.success, 1, 'one attempt of the container phase');
          return r.workflowId;
        },
        metrics,
      );
      const m = parseExposition(await metrics.registry.metrics());
      assert.equal(
        m.value('agentbench_activity_executions_total', { activity: 'executeCase', outcome: 'completed' }),
        1,
      );
      const spans = await eventually(
        async () => {
          await tracing.forceFlush();
          const mine = spansOf(receiver.exports.slice(exportsBefore)).filter(
            (s) => s.service === 'agentbench-run',
          );
          // No scorer: the container phase persists the case itself (no trajectory/score/finalize).
          return mine.some((s) => s.name === 'RunWorkflow:experimentRunWorkflow') &&
            mine.some((s) => s.name === 'RunActivity:executeCase')
            ? mine
            : undefined;
        },
        60_000,
        'the spans of the bundled worker',
      );
      const start = one(
        spans,
        'StartWorkflow',
        (s) =>
          s.name === 'StartWorkflow:experimentRunWorkflow' && s.attributes.temporalWorkflowId === workflowId,
      );
      assert.equal(start.attributes['benchmark.experiment_id'], String(seeded.experimentId));
      const runs = spans.filter((s) => s.traceId === start.traceId);
      const runWorkflow = one(runs, 'RunWorkflow', (s) => s.name === 'RunWorkflow:experimentRunWorkflow');
      assert.equal(runWorkflow.parentSpanId, start.spanId);
      const exec = one(runs, 'RunActivity:executeCase', (s) => s.name === 'RunActivity:executeCase');
      assert.equal(exec.attributes['benchmark.run_case_id'], caseId);
      const startExec = one(runs, 'StartActivity:executeCase', (s) => s.spanId === exec.parentSpanId);
      assert.equal(startExec.parentSpanId, runWorkflow.spanId);
    } finally {
      await client.connection.close();
      await tracing.shutdown();
    }
  });

  test('a prebuilt bundle without the interceptors on a tracing worker is reported at start', async () => {
    const plain = path.join(tmpdir(), `agentbench-plain-bundle-${process.pid}.js`);
    await writeFile(plain, '/* a bundle built without --with-tracing */');
    try {
      const config = configWith({ ORCHESTRATOR_OTLP_ENDPOINT: receiver.url });
      const tracing = startOrchestratorTracing(config, { service: 'agentbench-worker', log });
      assert.ok(tracing);
      const opts = await workerTracingOptions(tracing, { workflowBundlePath: plain, log });
      await tracing.shutdown();
      assert.ok(
        lines.some((l) => l.code === 'E_TRACING_BUNDLE_WITHOUT_INTERCEPTORS' && l.workflow_bundle === plain),
      );
      assert.deepEqual(
        opts.workflowModules,
        [],
        'a prebuilt bundle takes no interceptor modules at start-up',
      );
      assert.equal(opts.activity.length, 1, 'activity spans still come');
    } finally {
      await rm(plain, { force: true });
    }
  });

  test('workflows recorded without tracing replay with the tracing interceptors (tracing can be switched on for running runs)', async () => {
    const dir = path.resolve(__dirname, '../histories');
    const inputs = await Promise.all(
      readdirSync(dir)
        .filter((f) => f.endsWith('.json'))
        .sort()
        .map((f) => readHistoryFile(path.join(dir, f))),
    );
    const results = await replayHistories(inputs, undefined, { tracing: true });
    assert.equal(results.length, inputs.length);
    for (const r of results) assert.equal(r.error, undefined, `${r.workflowId}: ${r.error?.message}`);
  });

  test('an unreachable collector never holds up shutdown beyond the budget', async () => {
    const hanging = await startReceiver({ hang: true });
    try {
      const config = loadConfig({ ...stack.env, ORCHESTRATOR_OTLP_ENDPOINT: hanging.url });
      const tracing = startOrchestratorTracing(config, { service: 'agentbench-bridge', log });
      assert.ok(tracing);
      tracing.tracer.startSpan('left over').end();
      const t0 = Date.now();
      await tracing.shutdown();
      const took = Date.now() - t0;
      assert.ok(took < SHUTDOWN_BUDGET_MS + 1000, `shutdown took ${took} ms`);
      assert.ok(
        lines.some((l) => l.code === 'E_TRACING_SHUTDOWN'),
        'the dropped flush is reported',
      );
    } finally {
      await hanging.close();
    }
  });

  test('the stray OTEL_EXPORTER_OTLP_ENDPOINT never received anything', () => {
    assert.equal(strayReceiver.exports.length, 0);
  });
});
