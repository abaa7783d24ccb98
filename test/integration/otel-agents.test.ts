import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { createDockerClient } from '../../src/docker/docker-client';
import { DockerSandbox } from '../../src/docker/docker-sandbox';
import { Semaphore } from '../../src/docker/semaphore';
import { renderCommandTemplate } from '../../src/domain/template';
import type { SpanStep } from '../../src/domain/otlp-trajectory';
import { mergeCaseOtelEnv } from '../../src/otel/case-otel-env';
import { caseOtelEnv, OtelCollector } from '../../src/otel/otel-collector';
import { queryCaseTelemetry } from '../../src/otel/otel-repository';
import {
  createTestDatabase,
  seedExperiment,
  type SeededExperiment,
  type TestDatabase,
} from '../support/database';
import { baseSpec, captureLogger, newTestRunId, removeTestContainers, SOCKET_PATH } from './docker-fixtures';

const SDK_AGENT = 'bench/otel-sdk-agent:latest';
const MANUAL_AGENT = 'bench/otel-manual-agent:latest';
const MANUAL_COMMAND =
  'python3 /agent/post_spans.py {{mock.base_url}} {{run_case.run_case_id}} {{experiment.id}}';
const REPO = path.resolve(__dirname, '../..');

const docker = createDockerClient(SOCKET_PATH);
const runId = newTestRunId();
const { log } = captureLogger();
const sandbox = new DockerSandbox(docker, new Semaphore(4), log);

/** The agent's stdout JSON line (CONTRACT §4.5: the last line that parses as an object). */
function stdoutJson(stdout: string): Record<string, unknown> {
  const line = stdout
    .trim()
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('{'));
  assert.ok(line, `no JSON line in agent stdout: ${stdout}`);
  return JSON.parse(line) as Record<string, unknown>;
}

async function containerIp(containerId: string): Promise<string> {
  const info = await docker.getContainer(containerId).inspect();
  const ip = Object.values(info.NetworkSettings.Networks)[0]?.IPAddress;
  assert.ok(ip, 'container has an IP address');
  return ip;
}

describe('OTel from real agent containers (Docker + Postgres)', () => {
  let db: TestDatabase;
  let seeded: SeededExperiment;
  let collector: OtelCollector;
  let endpoint: string;

  /** Run case i of the seeded experiment. */
  const caseRef = (i: number) => ({
    runCaseId: seeded.runCaseIds[i] as number,
    experimentId: seeded.experimentId,
    dataItemId: seeded.dataItemIds[i] as number,
  });

  async function storedCases(
    where: string,
    params: unknown[],
  ): Promise<Array<{ run_case_id: number; n: number }>> {
    const { rows } = await db.pool.query<{ run_case_id: number; n: number }>(
      `SELECT run_case_id, count(*)::int AS n FROM otel_traces WHERE ${where} GROUP BY 1 ORDER BY 1`,
      params,
    );
    return rows;
  }

  async function runManualAgent(
    target: { endpoint: string; claims: ReturnType<typeof caseRef> },
    env: Record<string, string> = {},
    onStarted?: (containerId: string) => Promise<void>,
  ): Promise<Record<string, unknown>> {
    const { containerId } = await sandbox.createAndStart(
      baseSpec(runId, { image: MANUAL_AGENT, env, limits: { memoryMb: 256, cpus: 1, pidsLimit: 64 } }),
    );
    await onStarted?.(containerId);
    const command = renderCommandTemplate(MANUAL_COMMAND, {
      mock: { base_url: target.endpoint },
      run_case: { run_case_id: target.claims.runCaseId },
      experiment: { id: target.claims.experimentId },
    });
    const result = await sandbox.exec(containerId, { command, timeoutMs: 60_000 });
    assert.equal(result.exitCode, 0, result.stderr);
    await sandbox.remove(containerId);
    return stdoutJson(result.stdout);
  }

  before(async () => {
    // Idempotent: builds the OTel agent images (and their base) only when missing or changed.
    execFileSync(path.join(REPO, 'scripts/build-images'), { stdio: 'inherit' });
    db = await createTestDatabase();
    seeded = await seedExperiment(db.pool, { cases: 8 });
    collector = new OtelCollector({
      pool: db.pool,
      log,
      host: '0.0.0.0',
      port: 0,
      maxBodyBytes: 4 << 20,
      allowUntokened: false,
    });
    const { port } = await collector.start();
    endpoint = `http://host.docker.internal:${port}`;
  });

  after(async () => {
    await removeTestContainers(docker, runId);
    await collector.stop();
    await db.drop();
  });

  test('the OTel SDK agent, configured only by caseOtelEnv, yields a trajectory of its spans', async () => {
    const target = caseRef(0);
    const token = collector.issueToken(target);
    const env = caseOtelEnv({ endpoint, token, serviceName: 'sdk-agent-under-test', ...target });
    const { containerId } = await sandbox.createAndStart(
      baseSpec(runId, { image: SDK_AGENT, env, limits: { memoryMb: 512, cpus: 1, pidsLimit: 128 } }),
    );
    const result = await sandbox.exec(containerId, {
      command: 'python3 /agent/run_case.py what time is it',
      timeoutMs: 120_000,
    });
    assert.equal(result.exitCode, 0, `${result.stdout}\n${result.stderr}`);
    assert.deepEqual(stdoutJson(result.stdout), { output: '12:00', spans_flushed: true });
    collector.revokeToken(token);

    const telemetry = await queryCaseTelemetry(db.pool, target.runCaseId, Date.now());
    assert.equal(telemetry.source, 'spans');
    const steps = telemetry.steps as SpanStep[];
    assert.deepEqual(
      steps.map((s) => s.name),
      ['agent.run', 'llm.plan', 'tool.search', 'llm.answer'],
    );
    const [root, plan, search, answer] = steps;
    assert.equal(root?.parent_span_id, null);
    for (const child of [plan, search, answer]) assert.equal(child?.parent_span_id, root?.span_id);
    assert.deepEqual(root?.attributes, {
      'benchmark.run_case_id': String(target.runCaseId),
      'benchmark.data_item_id': String(target.dataItemId),
      query: 'what time is it',
      final_answer: '12:00',
    });
    assert.equal(search?.attributes['tool.name'], 'search');
    assert.equal(search?.attributes.query, 'what time is it');
    assert.match(String(search?.attributes.results), /12:00/);
    assert.equal(plan?.attributes.model, 'fake-llm-1');
    assert.ok((search?.latency_ms ?? 0) >= 4, 'a step that sleeps 5 ms lasts about that long');
    assert.equal((search?.events[0] as { name?: string } | undefined)?.name, 'search.done');
    assert.deepEqual(telemetry.usage, { inputTokens: 320, outputTokens: 42 });

    const { rows } = await db.pool.query<{ service_name: string; experiment_id: number; trace_id: string }>(
      'SELECT service_name, experiment_id, trace_id FROM otel_traces WHERE run_case_id = $1',
      [target.runCaseId],
    );
    assert.equal(rows.length, 4);
    for (const row of rows) {
      assert.equal(row.service_name, 'sdk-agent-under-test');
      assert.equal(row.experiment_id, target.experimentId);
      assert.match(row.trace_id, /^[0-9a-f]{32}$/);
    }
  });

  test('a hand-posting agent with no token from an unbound container is refused: 401, nothing stored', async () => {
    const claims = caseRef(1);
    const out = await runManualAgent({ endpoint, claims });
    assert.equal(out.otel_status, 401);
    assert.match(String(out.otel_response), /no ingest token/);
    assert.deepEqual(await storedCases('run_case_id = $1', [claims.runCaseId]), []);
  });

  test('…unless its container IP is bound to a case: then the post is stored under that case', async () => {
    const bound = caseRef(2);
    const claimed = caseRef(3);
    const token = collector.issueToken(bound);
    let ip = '';
    const out = await runManualAgent({ endpoint, claims: claimed }, {}, async (containerId) => {
      ip = await containerIp(containerId);
      collector.bindSource(ip, token);
    });
    collector.unbindSource(ip);
    collector.revokeToken(token);
    assert.equal(out.otel_status, 200, String(out.otel_response));
    assert.deepEqual(
      await storedCases('run_case_id = ANY($1::bigint[])', [[bound.runCaseId, claimed.runCaseId]]),
      [{ run_case_id: bound.runCaseId, n: 2 }],
    );
  });

  test('…or the collector runs with allowUntokened (the original behaviour): stored under the claimed case', async () => {
    const open = new OtelCollector({
      pool: db.pool,
      log,
      host: '0.0.0.0',
      port: 0,
      maxBodyBytes: 1 << 20,
      allowUntokened: true,
    });
    const { port } = await open.start();
    try {
      const claims = caseRef(4);
      const out = await runManualAgent({ endpoint: `http://host.docker.internal:${port}`, claims });
      assert.equal(out.otel_status, 200, String(out.otel_response));
      assert.deepEqual(await storedCases('run_case_id = $1', [claims.runCaseId]), [
        { run_case_id: claims.runCaseId, n: 2 },
      ]);
      const telemetry = await queryCaseTelemetry(db.pool, claims.runCaseId, Date.now());
      assert.deepEqual(
        (telemetry.steps as SpanStep[]).map((s) => [s.name, s.attributes]),
        [
          [
            'manual.run',
            {
              'benchmark.run_case_id': String(claims.runCaseId),
              query: 'capital of France?',
              final_answer: 'Paris',
            },
          ],
          [
            'manual.tool',
            {
              'tool.name': 'lookup',
              'benchmark.run_case_id': String(claims.runCaseId),
              path: '/wiki/France',
            },
          ],
        ],
      );
    } finally {
      await open.stop();
    }
  });

  test("a container posting with its own token while claiming another case's id is stored under its own case", async () => {
    const own = caseRef(5);
    const victim = caseRef(0);
    const token = collector.issueToken(own);
    const before = await storedCases('run_case_id = $1', [victim.runCaseId]);
    const env = caseOtelEnv({ endpoint, token, serviceName: 'sneaky', ...own });
    const out = await runManualAgent(
      { endpoint, claims: victim },
      { OTEL_EXPORTER_OTLP_HEADERS: env.OTEL_EXPORTER_OTLP_HEADERS ?? '' },
    );
    collector.revokeToken(token);
    assert.equal(out.otel_status, 200, String(out.otel_response));
    assert.deepEqual(await storedCases('run_case_id = $1', [own.runCaseId]), [
      { run_case_id: own.runCaseId, n: 2 },
    ]);
    assert.deepEqual(await storedCases('run_case_id = $1', [victim.runCaseId]), before);
  });

  test('a server-style SDK agent (start command, driven by the case command) keeps all its spans: SIGTERM, then the kill', async () => {
    /** One case of the agent on `sb`; what the collector stored for it once the container is gone. */
    async function serveOneCase(sb: DockerSandbox, target: ReturnType<typeof caseRef>) {
      const token = collector.issueToken(target);
      // The agent's own settings: a batch delay far beyond the case (it flushes only on shutdown)
      // and a resource attribute of its own, merged with ours.
      const env = mergeCaseOtelEnv(
        { OTEL_BSP_SCHEDULE_DELAY: '60000', OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment=bench' },
        caseOtelEnv({ endpoint, token, serviceName: 'server-agent', ...target }),
      );
      const container = await sb.createAndStart(
        baseSpec(runId, {
          image: SDK_AGENT,
          env,
          startCommand: 'python3 /agent/serve_case.py 8080',
          limits: { memoryMb: 512, cpus: 1, pidsLimit: 128 },
          startup: { timeoutSeconds: 60, pollIntervalSeconds: 0.2 },
        }),
      );
      const result = await sb.execUntilAgentReady(container, {
        command: 'curl -fsS "http://127.0.0.1:8080/run?q=life"',
        timeoutMs: 60_000,
      });
      assert.equal(result.exitCode, 0, `${result.stdout}\n${result.stderr}`);
      assert.deepEqual(stdoutJson(result.stdout), { output: '42' });
      await sb.remove(container.containerId);
      assert.equal(await collector.drain(5_000), true);
      collector.revokeToken(token);
      return storedCases('run_case_id = $1', [target.runCaseId]);
    }

    const graceful = new DockerSandbox(docker, new Semaphore(4), log, { stopGraceMs: 5_000 });
    const kept = caseRef(6);
    assert.deepEqual(await serveOneCase(graceful, kept), [{ run_case_id: kept.runCaseId, n: 2 }]);
    const { rows } = await db.pool.query<{ resource_attributes: Record<string, unknown> }>(
      'SELECT resource_attributes FROM otel_traces WHERE run_case_id = $1',
      [kept.runCaseId],
    );
    for (const row of rows) {
      assert.equal(row.resource_attributes['deployment.environment'], 'bench');
      assert.equal(row.resource_attributes['benchmark.run_case_id'], String(kept.runCaseId));
    }
    // The control: killed without the stop grace, the same agent loses its spans (the issue's 0 of 2).
    const lost = caseRef(7);
    assert.deepEqual(await serveOneCase(sandbox, lost), []);
  });
});
