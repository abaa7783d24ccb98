import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type Dockerode from 'dockerode';
import { parseExperimentMessage } from '../../src/domain/message';
import type { ExperimentRunResult } from '../../src/domain/experiment-run';
import type { ReadinessReport } from '../../src/metrics/readiness';
import { startExperimentRun } from '../../src/temporal/run-starter';
import { createLogger } from '../../src/logger';
import { seedExperiment, type SeededExperiment } from '../support/database';
import { buildPlatformMessage } from '../support/platform';
import { httpGet } from '../support/prometheus-text';
import { freePort } from '../support/ports';
import { eventually, managedContainers, spawnWorker, startStack, type Stack } from '../support/stack';

const exec = promisify(execFile);
const BUILD_IMAGES = path.resolve(__dirname, '../../scripts/build-images');

/**
 * An agent on the OpenTelemetry Python SDK (zero config: the injected OTEL_* env) that asks an
 * HTTPS API answered by a python mock rule, and tries one direct connection past its gateway.
 */
function agentScript(directPort: number): string {
  return `python3 - <<'PY'
import json, socket, urllib.request
from opentelemetry import trace
from opentelemetry.instrumentation.auto_instrumentation import initialize

initialize()
tracer = trace.get_tracer("e2e.deploy-image")
with tracer.start_as_current_span("agent.run") as root:
    with tracer.start_as_current_span("tool.lookup") as span:
        span.set_attribute("tool.name", "lookup")
        answer = json.load(urllib.request.urlopen("https://api.example.test/v1/answer?q=tokyo", timeout=20))["answer"]
        span.set_attribute("results", answer)
    probe = socket.socket()
    probe.settimeout(5)
    try:
        probe.connect(("host.docker.internal", ${directPort}))
        direct = "open"
    except OSError:
        direct = "blocked"
    finally:
        probe.close()
    root.set_attribute("final_answer", answer)
flushed = trace.get_tracer_provider().force_flush(10000)
print(json.dumps({"output": {"answer": answer, "direct": direct, "spans_flushed": bool(flushed)}}))
PY`;
}

/**
 * `benchctl worker` inside the deploy image, run the way deploy/k8s/agentbench.yaml runs it: the
 * host's network (the worker's collector and gateways listen where case containers reach them, the
 * sealed networks' firewall chains land in the host's netns), the Docker socket mounted, all
 * capabilities dropped but NET_ADMIN, no-new-privileges, a read-only root with a /tmp tmpfs, and the
 * case-file directory mounted at the same path on both sides. Against the host's Temporal and
 * Postgres, on a task queue of its own.
 */
describe('the deploy image runs a worker that serves every feature', () => {
  const log = createLogger({ level: 'silent' });
  const tag = `agentbench-orchestrator:e2e-${randomBytes(4).toString('hex')}`;
  let stack: Stack;
  let caseFilesDir: string;
  let metricsPort: number;
  let worker: Dockerode.Container | null = null;
  const workflowIds: string[] = [];

  async function workerLogs(): Promise<string> {
    if (!worker) return '';
    const { stdout, stderr } = await exec('docker', ['logs', worker.id], { maxBuffer: 64 * 1024 * 1024 });
    return stdout + stderr;
  }

  async function readyz(): Promise<{ status: number; report: ReadinessReport }> {
    const res = await httpGet(`http://127.0.0.1:${metricsPort}/readyz`);
    return { status: res.status, report: JSON.parse(res.body) as ReadinessReport };
  }

  async function startWorkerContainer(): Promise<Dockerode.Container> {
    const env = {
      ...stack.env,
      LOG_LEVEL: 'info',
      METRICS_PORT: String(metricsPort),
      SANDBOX_CASE_FILES_DIR: caseFilesDir,
      OTEL_FLUSH_GRACE_MS: '1500',
      WORKER_SHUTDOWN_GRACE_SECONDS: '60',
    };
    const container = await stack.docker.createContainer({
      name: `agentbench-e2e-worker-${randomBytes(4).toString('hex')}`,
      Image: tag,
      Cmd: ['worker'],
      Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
      Labels: { 'io.agentbench.e2e': 'deploy-image-worker' },
      HostConfig: {
        NetworkMode: 'host',
        CapDrop: ['ALL'],
        CapAdd: ['NET_ADMIN'],
        SecurityOpt: ['no-new-privileges'],
        ReadonlyRootfs: true,
        Tmpfs: { '/tmp': 'rw,nosuid,nodev' },
        Binds: ['/var/run/docker.sock:/var/run/docker.sock', `${caseFilesDir}:${caseFilesDir}`],
      },
    });
    await container.start();
    return container;
  }

  before(async () => {
    await exec('bash', [BUILD_IMAGES], { timeout: 900_000 });
    const { stdout } = await exec('bash', [BUILD_IMAGES, '--deploy', '--tag', tag], { timeout: 900_000 });
    process.stdout.write(`${stdout.trim().split('\n').pop() ?? ''}\n`);
    stack = await startStack({ worker: false });
    caseFilesDir = await mkdtemp(path.join(os.tmpdir(), 'agentbench-e2e-case-files-'));
    // The worker listens on every interface of the host's network.
    metricsPort = await freePort('0.0.0.0');
    worker = await startWorkerContainer();
    const ready = await eventually(
      async () => {
        const state = (await worker?.inspect())?.State;
        if (state && !state.Running) throw new Error(`the worker container exited (${state.ExitCode})`);
        const r = await readyz();
        return r.status === 200 ? r.report : undefined;
      },
      120_000,
      'the worker in the image to be ready',
    ).catch(async (err: unknown) => {
      throw new Error(`${String(err)}\n${await workerLogs()}`);
    });
    assert.deepEqual(ready.checks, { temporal: { ok: true }, postgres: { ok: true }, docker: { ok: true } });
  });

  after(async () => {
    await worker?.remove({ force: true }).catch(() => undefined);
    await stack.docker
      .getImage(tag)
      .remove()
      .catch(() => undefined);
    if (caseFilesDir) await rm(caseFilesDir, { recursive: true, force: true });
    assert.deepEqual(await managedContainers(stack.docker, workflowIds), [], 'no container of ours is left');
    await stack?.stop();
  });

  async function start(
    seeded: SeededExperiment,
    runtimeSpec: Record<string, unknown>,
    caseExtras?: (i: number) => Record<string, unknown>,
  ) {
    const parsed = parseExperimentMessage(
      JSON.stringify(buildPlatformMessage(seeded, { queue: 'direct', runtimeSpec, caseExtras })),
    );
    assert.ok(parsed.ok);
    const r = await startExperimentRun(
      { client: stack.client, pool: stack.db.pool, config: stack.config, log },
      parsed.message,
      parsed.message.message_id,
    );
    workflowIds.push(r.workflowId);
    return stack.client.workflow.getHandle(r.workflowId);
  }

  async function caseRow(experimentId: number) {
    const { rows } = await stack.db.pool.query<{
      status: string;
      error_message: string | null;
      agent_output: unknown;
      agent_trajectory: Array<Record<string, unknown>>;
      usage_json: Record<string, unknown>;
      artifacts_json: Record<string, unknown>;
      attempt_no: number;
    }>('SELECT * FROM run_cases WHERE experiment_id = $1 ORDER BY id', [experimentId]);
    assert.equal(rows.length, 1);
    return rows[0] as (typeof rows)[number];
  }

  test('a sealed case (passthrough: false) with an HTTPS python mock rule and the OTel SDK agent succeeds', async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: 1 });
    const handle = await start(
      seeded,
      {
        agent_image: 'bench/otel-sdk-agent:latest',
        sandbox_start_command: 'sleep infinity',
        case_exec_command: agentScript(metricsPort),
      },
      () => ({
        mock_config: {
          passthrough: false,
          rules: [
            {
              name: 'answer-by-python',
              match: { methods: ['GET'], host: 'api.example.test', path: '/v1/answer' },
              response: {
                type: 'python',
                python_code:
                  'def handle(request):\n    return {"json": {"answer": "python says " + request["scheme"] + " " + request["query"]["q"][0]}}',
              },
            },
          ],
        },
      }),
    );
    const result = (await handle.result()) as ExperimentRunResult;
    assert.equal(result.outcome, 'completed');
    const row = await caseRow(seeded.experimentId);
    assert.equal(row.status, 'success', `${row.error_message ?? ''}\n${await workerLogs()}`);
    assert.deepEqual(row.agent_output, {
      answer: 'python says https tokyo',
      direct: 'blocked',
      spans_flushed: true,
    });
    const requests = (
      row.artifacts_json.mock_gateway as {
        requests: Array<{ url: string; matched: string | null; status: number }>;
      }
    ).requests;
    assert.ok(
      requests.some(
        (r) =>
          r.url === 'https://api.example.test/v1/answer?q=tokyo' &&
          r.matched === 'answer-by-python' &&
          r.status === 200,
      ),
      JSON.stringify(requests),
    );
    assert.equal(
      row.usage_json.trajectory_source,
      'spans',
      'the trajectory is the agent’s spans, through the sealed gateway',
    );
    const names = row.agent_trajectory.map((s) => s.name);
    assert.ok(names.includes('agent.run') && names.includes('tool.lookup'), JSON.stringify(names));
  });

  test('the search-attribute Job’s command, run as the manifests run it: non-root, no capabilities, read-only root', async () => {
    const { stdout } = await exec(
      'docker',
      [
        'run',
        '--rm',
        '--network',
        'host',
        '--user',
        '65532:65532',
        '--cap-drop',
        'ALL',
        '--security-opt',
        'no-new-privileges',
        '--read-only',
        '--tmpfs',
        '/tmp',
        '-e',
        `TEMPORAL_ADDRESS=${stack.config.temporal.address}`,
        '-e',
        `TEMPORAL_NAMESPACE=${stack.config.temporal.namespace}`,
        tag,
        'register-search-attributes',
        '--wait',
        '30',
      ],
      { timeout: 120_000 },
    );
    assert.match(
      stdout,
      /^search attributes in namespace default at [^:]+:\d+: nothing to register; already present: ExperimentId, /,
    );
  });

  test('SIGTERM (docker stop): not ready at once, the in-flight case finishes on its first attempt, exit 0', async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: 1 });
    const handle = await start(seeded, {
      agent_image: 'bench/busybox:latest',
      sandbox_start_command: 'sleep 3600',
      case_exec_command: `sleep 6; echo '{"output":"drained"}'`,
    });
    await eventually(
      async () =>
        (await managedContainers(stack.docker, [handle.workflowId])).length === 1 ? true : undefined,
      60_000,
      'the case container',
    );
    assert.ok(worker);
    await worker.kill({ signal: 'SIGTERM' });
    const stopping = await eventually(
      async () => {
        const r = await readyz();
        return r.report.status === 'stopping' ? r : undefined;
      },
      10_000,
      '/readyz to say stopping',
    );
    assert.equal(stopping.status, 503);
    const exit = (await worker.wait()) as { StatusCode: number };
    const logs = await workerLogs();
    assert.equal(exit.StatusCode, 0, logs);
    assert.match(logs, /"code":"WORKER_STOPPING","signal":"SIGTERM","grace_seconds":60/);
    const row = await caseRow(seeded.experimentId);
    assert.equal(row.status, 'success', row.error_message ?? '');
    assert.equal(row.agent_output, 'drained');

    // The drained worker took no more tasks: another one finishes the run, without re-running the case.
    // No metrics endpoint: the default port may be another worker's on this shared host.
    const next = spawnWorker({ ...stack.env, METRICS_PORT: '0' });
    try {
      // Bounded, and failing with what the worker said if it died (nobody else serves this queue).
      const result = await Promise.race([
        handle.result() as Promise<ExperimentRunResult>,
        next.exited.then((code) => {
          throw new Error(`the second worker exited (${String(code)}):\n${next.output()}`);
        }),
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error(`the run did not finish:\n${next.output()}`)), 120_000).unref(),
        ),
      ]);
      assert.equal(result.outcome, 'completed');
      const events = (await handle.fetchHistory()).events ?? [];
      const runAttempts = events.filter(
        (e) => e.activityTaskStartedEventAttributes && e.activityTaskStartedEventAttributes.attempt !== 1,
      );
      assert.deepEqual(runAttempts, [], 'no activity needed a second attempt');
    } finally {
      next.child.kill('SIGTERM');
      await next.exited;
    }
  });
});
