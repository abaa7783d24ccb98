import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ActivityCancellationDetails, ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import type { Info } from '@temporalio/activity';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { FileCaseResultSpool } from '../../activities/case-result-spool';
import { createCaseFinalization } from '../../activities/case-finalization';
import {
  createCaseExecution,
  type ContainerSlots,
  type CaseExecutionDeps,
  type CaseSandbox,
} from '../../activities/case-execution';
import { caseSpecDefaults, loadConfig } from '../../src/config';
import { loadCasePhases } from '../../src/db/case-result-repository';
import { RunRequestCache } from '../../src/db/run-request-cache';
import { getCaseStatuses } from '../../src/db/run-case-repository';
import { queueRunCases } from '../../src/db/run-control-repository';
import type {
  CaseExecutionSummary,
  CaseFinalSummary,
  ExecuteCaseInput,
} from '../../src/domain/activity-contract';
import type {
  AdoptableContainer,
  CaseContainerSpec,
  ExecParams,
  ExecResult,
  PredecessorContainer,
} from '../../src/docker/docker-sandbox';
import type { WarmSandbox, WarmSandboxTemplate } from '../../src/docker/warm-pool';
import { caseContainerName, LABELS } from '../../src/docker/labels';
import { createLogger, type Logger } from '../../src/logger';
import { createTestDatabase, seedExperiment, setCaseStatuses, type TestDatabase } from '../support/database';
import { storeRunRequest } from '../support/platform';
import { captureLogger, localTestEnv } from '../support/stack';

/**
 * The container phase as an activity (MockActivityEnvironment: attempt, heartbeat details and
 * cancellation as Temporal hands them over) against the real Postgres, with a recording sandbox in
 * place of Docker: the branches a retry or a cancel takes, which otherwise only a killed worker or
 * `benchctl cancel` in an end-to-end run reaches. The Docker side is docker-sandbox.test.ts's.
 */

const log = createLogger({ level: 'silent' });
/** The SDK logs a cancelled attempt; that is what one test is about. */
const QUIET = { logger: new DefaultLogger('ERROR') };

const AGENT_DONE: ExecResult = {
  exitCode: 0,
  stdout: '{"output": "done"}',
  stderr: '',
  timedOut: false,
  durationMs: 1,
};

/** A sandbox that records what the activity asks of Docker; the case command runs `agent`. */
class RecordingSandbox implements CaseSandbox {
  readonly events: string[] = [];
  readonly created: CaseContainerSpec[] = [];
  /** What listManagedContainers finds of earlier attempts. */
  leftovers: Array<{ id: string; labels?: Record<string, string>; networks?: string[] }> = [];
  /** What inspectPredecessor finds in a leftover (default: it is gone). */
  predecessor: PredecessorContainer = { kind: 'gone' };
  /** The adopted case command's outcome, and the timeouts it was awaited with. */
  adoptedOutcome: ExecResult = AGENT_DONE;
  readonly awaitTimeouts: number[] = [];

  constructor(private readonly agent: (p: ExecParams) => Promise<ExecResult> = async () => AGENT_DONE) {}

  async createAndStart(spec: CaseContainerSpec) {
    this.created.push(spec);
    const containerId = `container-${this.created.length}`;
    this.events.push(`create ${containerId}`);
    return { containerId, name: spec.name, addresses: ['10.9.0.2'], startup: spec.startup };
  }
  async execUntilAgentReady(_container: unknown, p: ExecParams) {
    this.events.push('exec');
    return this.agent(p);
  }
  async exec(_containerId: string, p: ExecParams) {
    this.events.push('after_exec');
    return this.agent(p);
  }
  async logs() {
    return '';
  }
  async remove(containerIdOrName: string) {
    this.events.push(`remove ${containerIdOrName}`);
  }
  async listManagedContainers() {
    return this.leftovers.map((c) => ({ labels: {}, networks: [], ...c }));
  }
  async inspectPredecessor() {
    return this.predecessor;
  }
  async awaitCaseCommand(c: AdoptableContainer, p: { timeoutMs: number }) {
    this.events.push(`await ${c.containerId}`);
    this.awaitTimeouts.push(p.timeoutMs);
    return this.adoptedOutcome;
  }
  /** What the sandbox answers for a command that died of a signal (DockerSandbox polls the container). */
  stoppedByOthers = false;
  async stoppedFromOutside() {
    return this.stoppedByOthers;
  }
}

describe('executeCase (container phase) under MockActivityEnvironment', () => {
  let db: TestDatabase;
  let spoolDir: string;
  let spool: FileCaseResultSpool;
  before(async () => {
    db = await createTestDatabase();
    spoolDir = await mkdtemp(path.join(tmpdir(), 'case-spool-test-'));
    spool = new FileCaseResultSpool(spoolDir, 'test-deployment');
  });
  after(async () => {
    await db?.drop();
    if (spoolDir) await rm(spoolDir, { recursive: true, force: true });
  });

  /** A queued one-case run and the container phase's dependencies around `sandbox`. */
  async function oneCaseRun(
    sandbox: CaseSandbox,
    liveContainers: ContainerSlots = { run: (fn) => fn() },
    extra: Pick<CaseExecutionDeps, 'warmPool'> & { runtimeSpec?: Record<string, unknown>; log?: Logger } = {},
  ) {
    const seeded = await seedExperiment(db.pool, { cases: 1 });
    const workflowId = await storeRunRequest(db.pool, seeded, extra.runtimeSpec);
    await queueRunCases(db.pool, { workflowId, experimentId: seeded.experimentId });
    const revokedTokens: string[] = [];
    const adoptedTokens: string[] = [];
    const removedNetworks: string[] = [];
    const config = loadConfig(localTestEnv());
    const deps: CaseExecutionDeps = {
      pool: db.pool,
      log: extra.log ?? log,
      config: { resultCache: config.resultCache },
      llm: config.llm,
      specDefaults: caseSpecDefaults(config),
      images: { imageId: async () => null },
      runRequests: new RunRequestCache(db.pool, caseSpecDefaults(config), undefined),
      telemetry: {
        query: async () => ({ steps: [], source: 'none', usage: null }),
        flushGrace: async () => {},
      },
      collector: {
        issueToken: () => 'case-token',
        revokeToken: (token) => revokedTokens.push(token),
        adoptToken: (token) => adoptedTokens.push(token),
        bindSource: () => {},
        drain: async () => true,
      },
      collectorUrl: 'http://127.0.0.1:9',
      gateways: {
        start: async () => {
          throw new Error('these cases have no mock_config');
        },
      },
      networks: {
        isolate: false,
        collectorPort: 9,
        hostPorts: [],
        create: async () => {
          throw new Error('these cases run without a network of their own');
        },
        removeLeftover: async (name) => {
          removedNetworks.push(name);
        },
      },
      sealPassthroughFalse: false,
      flushGraceMs: 0,
      sandbox,
      liveContainers,
      spool,
      ...(extra.warmPool ? { warmPool: extra.warmPool } : {}),
    };
    const runCaseId = seeded.runCaseIds[0] as number;
    const ref: ExecuteCaseInput = { workflowId, experimentId: seeded.experimentId, runCaseId };
    const { executeCase } = createCaseExecution(deps);
    const { finalizeCase } = createCaseFinalization(deps);
    return { ref, executeCase, finalizeCase, revokedTokens, adoptedTokens, removedNetworks };
  }

  const attempt = (info: Partial<Info>) => new MockActivityEnvironment(info, QUIET);
  /** `executeCase(input)` in `env`'s activity context (its `run` cannot infer the result type). */
  const runIn = (
    env: MockActivityEnvironment,
    executeCase: (input: ExecuteCaseInput) => Promise<CaseExecutionSummary>,
    input: ExecuteCaseInput,
  ) => env.run<[ExecuteCaseInput], CaseExecutionSummary, typeof executeCase>(executeCase, input);

  test('a first attempt looks for no predecessor; it stores the record before it returns', async () => {
    const sandbox = new RecordingSandbox();
    const { ref, executeCase } = await oneCaseRun(sandbox);

    const summary = await runIn(attempt({ attempt: 1 }), executeCase, ref);

    assert.equal(summary.status, 'success');
    assert.deepEqual(sandbox.events, ['create container-1', 'exec', 'remove container-1']);
    assert.equal(sandbox.created[0]?.name, caseContainerName(ref.workflowId, ref.runCaseId, 1));
    const stored = await loadCasePhases(db.pool, ref.workflowId, ref.runCaseId);
    assert.equal(stored?.result.status, 'success');
    assert.equal(stored?.result.attempt, 1);
  });

  test('warm pool: a case with an idle start command claims a warm container and hands it its spec (env, files); others create their own', async () => {
    const sandbox = new RecordingSandbox();
    const templates: WarmSandboxTemplate[] = [];
    const handed: CaseContainerSpec[] = [];
    let discards = 0;
    const warmPool = {
      claim(template: WarmSandboxTemplate): WarmSandbox {
        templates.push(template);
        return {
          name: 'agentbench-warm-test',
          network: undefined,
          async start(spec) {
            handed.push(spec);
            sandbox.events.push('claim warm-1');
            return {
              containerId: 'warm-1',
              name: 'agentbench-warm-test',
              addresses: [],
              startup: spec.startup,
            };
          },
          async discard() {
            discards++;
          },
        };
      },
    };
    const idle = {
      agent_image: 'bench/busybox:latest',
      sandbox_start_command: 'sleep infinity',
      case_exec_command: 'true',
    };
    const { ref, executeCase } = await oneCaseRun(sandbox, undefined, { warmPool, runtimeSpec: idle });

    const summary = await runIn(attempt({ attempt: 1 }), executeCase, ref);

    assert.equal(summary.status, 'success');
    assert.deepEqual(sandbox.events, ['claim warm-1', 'exec', 'remove warm-1']);
    assert.equal(templates[0]?.container.startCommand, 'sleep infinity');
    assert.equal(templates[0]?.container.image, 'bench/busybox:latest');
    assert.equal(handed[0]?.env.BENCHMARK_RUN_CASE_ID, String(ref.runCaseId));
    assert.ok(handed[0]?.files?.some((f) => f.path === '/benchmark/case.json'));
    // After start() a discard is the pool's no-op; the case removed its container as any other.
    assert.equal(discards, 1);
    const stored = await loadCasePhases(db.pool, ref.workflowId, ref.runCaseId);
    assert.equal(stored?.result.containerName, 'agentbench-warm-test');

    // The image's CMD (no start command) may read the case's env: never a warm container.
    const cold = new RecordingSandbox();
    const other = await oneCaseRun(cold, undefined, { warmPool });
    await runIn(attempt({ attempt: 1 }), other.executeCase, other.ref);
    assert.equal(templates.length, 1);
    assert.deepEqual(cold.events, ['create container-1', 'exec', 'remove container-1']);
  });

  test("a retried attempt removes the previous attempt's container (heartbeat details) and labelled leftovers before creating its own", async () => {
    const sandbox = new RecordingSandbox();
    sandbox.leftovers = [{ id: 'leftover-of-attempt-1' }];
    const { ref, executeCase } = await oneCaseRun(sandbox);

    const summary = await runIn(
      attempt({
        attempt: 2,
        heartbeatDetails: { containerId: 'container-of-attempt-1', phase: 'case_exec' },
      }),
      executeCase,
      ref,
    );

    assert.equal(summary.status, 'success');
    assert.deepEqual(sandbox.events.slice(0, 3), [
      'remove container-of-attempt-1',
      'remove leftover-of-attempt-1',
      'create container-1',
    ]);
    assert.equal(sandbox.created[0]?.labels[LABELS.attempt], '2');
    assert.equal(sandbox.created[0]?.name, caseContainerName(ref.workflowId, ref.runCaseId, 2));
    assert.equal((await loadCasePhases(db.pool, ref.workflowId, ref.runCaseId))?.result.attempt, 2);
  });

  /** A killed worker's container of attempt 1, its case command recorded in it (DockerSandbox.inspectPredecessor). */
  function killedWorkersContainer(over: Partial<AdoptableContainer> = {}): AdoptableContainer {
    return {
      containerId: 'container-of-killed-worker',
      name: 'agentbench-case-of-attempt-1',
      addresses: ['10.9.0.7'],
      networks: ['agentbench-case-net-1'],
      env: {
        BENCHMARK_MOCK_BASE_URL: 'http://10.9.0.1:4318',
        OTEL_EXPORTER_OTLP_HEADERS: 'x-agentbench-ingest-token=token-of-the-killed-worker',
      },
      labels: { [LABELS.attempt]: '1' },
      startedAtMs: Date.now() - 5_000,
      token: 'exec-token',
      exitCode: null,
      ...over,
    };
  }

  test("a retry adopts a killed worker's container whose agent still runs: no container started, the agent's outcome stored, container and case network removed", async () => {
    const sandbox = new RecordingSandbox();
    const container = killedWorkersContainer();
    sandbox.leftovers = [
      { id: container.containerId, labels: container.labels, networks: container.networks },
    ];
    sandbox.predecessor = { kind: 'adoptable', container };
    sandbox.adoptedOutcome = { ...AGENT_DONE, stdout: '{"output": "adopted"}' };
    const worker = captureLogger('info');
    const { ref, executeCase, adoptedTokens, removedNetworks } = await oneCaseRun(sandbox, undefined, {
      log: worker.log,
    });

    const summary = await runIn(attempt({ attempt: 2 }), executeCase, ref);

    assert.equal(summary.status, 'success');
    assert.deepEqual(sandbox.events, [`await ${container.containerId}`, `remove ${container.name}`]);
    assert.equal(sandbox.created.length, 0, 'no container started');
    const timeoutMs = sandbox.awaitTimeouts[0] ?? 0;
    assert.ok(
      timeoutMs > 170_000 && timeoutMs <= 175_000,
      `awaited until the command's own deadline (180 s from its start 5 s ago): ${timeoutMs}`,
    );
    const stored = await loadCasePhases(db.pool, ref.workflowId, ref.runCaseId);
    assert.equal(stored?.result.agentOutput, 'adopted');
    assert.equal(stored?.result.attempt, 2);
    assert.equal(stored?.result.containerName, container.name);
    assert.equal(stored?.result.telemetryComplete, false, 'spans sent while no worker listened may be lost');
    assert.deepEqual(adoptedTokens, ['token-of-the-killed-worker'], "the case's ingest token is taken over");
    assert.deepEqual(removedNetworks, container.networks);
    const adopted = worker.lines.find((l) => l.code === 'CASE_CONTAINER_ADOPTED');
    assert.equal(adopted?.from_attempt, 1);
    assert.equal(worker.lines.filter((l) => l.code === 'CASE_EXEC_START').length, 0);
  });

  test("an adopted case command past its deadline (counted from its own start) is the case's timeout", async () => {
    const sandbox = new RecordingSandbox();
    const container = killedWorkersContainer({ startedAtMs: Date.now() - 600_000 });
    sandbox.leftovers = [{ id: container.containerId }];
    sandbox.predecessor = { kind: 'adoptable', container };
    sandbox.adoptedOutcome = {
      exitCode: -1,
      stdout: 'partial',
      stderr: '',
      timedOut: true,
      durationMs: 600_000,
    };
    const { ref, executeCase } = await oneCaseRun(sandbox);

    const summary = await runIn(attempt({ attempt: 2 }), executeCase, ref);

    assert.equal(summary.status, 'timeout');
    assert.ok((sandbox.awaitTimeouts[0] ?? 1) <= 0, 'already past its deadline');
    assert.deepEqual(sandbox.events, [`await ${container.containerId}`, `remove ${container.name}`]);
  });

  test('a leftover without the case command recorded, or of a case whose mock gateway died with its worker, is removed and the case starts afresh', async () => {
    const cases: Array<[string, Record<string, unknown> | undefined, PredecessorContainer, string]> = [
      [
        'no record',
        undefined,
        { kind: 'unadoptable', reason: 'the case command never started in it', name: 'c', networks: ['n1'] },
        'the case command never started in it',
      ],
      [
        'mock gateway',
        { agent_image: 'bench/busybox:latest', case_exec_command: 'true', mock_gateway: true },
        { kind: 'adoptable', container: killedWorkersContainer() },
        'its mock gateway ran in the worker that started it',
      ],
    ];
    for (const [what, runtimeSpec, predecessor, reason] of cases) {
      const sandbox = new RecordingSandbox();
      sandbox.leftovers = [{ id: 'leftover', labels: { [LABELS.attempt]: '1' } }];
      sandbox.predecessor = predecessor;
      const worker = captureLogger('info');
      const { ref, executeCase, removedNetworks } = await oneCaseRun(sandbox, undefined, {
        log: worker.log,
        ...(runtimeSpec ? { runtimeSpec } : {}),
      });

      const run = runIn(attempt({ attempt: 2 }), executeCase, ref);
      if (what === 'mock gateway') await assert.rejects(run, /these cases have no mock_config/);
      else assert.equal((await run).status, 'success');

      assert.equal(sandbox.events[0], 'remove leftover', what);
      assert.ok(!sandbox.events.some((e) => e.startsWith('await')), `${what}: nothing adopted`);
      const skipped = worker.lines.find((l) => l.code === 'CASE_ADOPTION_SKIPPED');
      assert.equal(skipped?.reason, reason, what);
      assert.equal(skipped?.from_attempt, 1);
      if (what === 'no record') {
        assert.deepEqual(removedNetworks, ['n1'], "the leftover's case network goes too");
        assert.deepEqual(sandbox.events, [
          'remove leftover',
          'create container-1',
          'exec',
          'remove container-1',
        ]);
      }
    }
  });

  test('a retry that finds its predecessor stored the record does not run the agent again, and finishes the case inline when asked', async () => {
    const sandbox = new RecordingSandbox();
    const { ref, executeCase } = await oneCaseRun(sandbox);
    // The first attempt stored its record, then its result was lost (worker gone before it reported).
    await runIn(attempt({ attempt: 1 }), executeCase, ref);

    const retried = await runIn(attempt({ attempt: 2 }), executeCase, { ...ref, finishInline: true });

    assert.equal(sandbox.created.length, 1, 'one container for the case');
    assert.equal(sandbox.events.filter((e) => e === 'exec').length, 1, 'the agent ran once');
    assert.deepEqual(retried.finalized, { status: 'success', errorMessage: null, persisted: true });
    assert.equal((await getCaseStatuses(db.pool, ref.experimentId)).get(ref.runCaseId), 'success');
  });

  test('a case no longer active (canceled meanwhile) is not executed', async () => {
    const sandbox = new RecordingSandbox();
    const { ref, executeCase } = await oneCaseRun(sandbox);
    await setCaseStatuses(db.pool, [ref.runCaseId], 'canceled');

    const summary = await runIn(attempt({ attempt: 1 }), executeCase, ref);

    assert.deepEqual(summary, { status: 'not_active', errorMessage: null, exitCode: null });
    assert.deepEqual(sandbox.events, []);
  });

  test('cancelled while the agent runs: heartbeats name the container, which is removed; nothing is stored; the OTel token is revoked', async () => {
    const sandbox = new RecordingSandbox(
      (p) =>
        new Promise((_resolve, reject) =>
          p.signal?.addEventListener('abort', () => reject(new Error('exec aborted')), { once: true }),
        ),
    );
    const { ref, executeCase, revokedTokens } = await oneCaseRun(sandbox);
    const env = attempt({ attempt: 1 });
    const heartbeats: unknown[] = [];
    // Temporal delivers a cancellation in a heartbeat's response: cancel on the first one.
    env.on('heartbeat', (details: unknown) => {
      heartbeats.push(details);
      env.cancel();
    });

    await assert.rejects(runIn(env, executeCase, ref), CancelledFailure);

    assert.deepEqual(heartbeats, [{ containerId: 'container-1', phase: 'case_exec' }]);
    assert.deepEqual(sandbox.events, ['create container-1', 'exec', 'remove container-1']);
    assert.equal(await loadCasePhases(db.pool, ref.workflowId, ref.runCaseId), null);
    assert.deepEqual(revokedTokens, ['case-token']);
  });

  test('a Docker error removing the finished container loses nothing: the record is stored, the agent ran once', async () => {
    const sandbox = new RecordingSandbox();
    sandbox.remove = async (id: string) => {
      sandbox.events.push(`remove ${id}`);
      throw new Error('E_DOCKER_REMOVE: (HTTP code 500) server error - driver failed removing container');
    };
    const { ref, executeCase } = await oneCaseRun(sandbox);

    const summary = await runIn(attempt({ attempt: 1 }), executeCase, ref);

    assert.equal(summary.status, 'success');
    assert.equal(sandbox.events.filter((e) => e === 'exec').length, 1);
    const stored = await loadCasePhases(db.pool, ref.workflowId, ref.runCaseId);
    assert.deepEqual(stored?.result.agentOutput, 'done');
    assert.equal(
      await spool.read(ref.workflowId, ref.runCaseId),
      null,
      'the spooled copy is gone once stored',
    );
  });

  test('a retry finds the record its predecessor spooled but could not store: it stores that one and runs no agent', async () => {
    const sandbox = new RecordingSandbox();
    const { ref, executeCase } = await oneCaseRun(sandbox);
    // Attempt 1 ran the agent and spooled its record; Postgres was down until its end.
    const now = new Date().toISOString();
    await spool.write(ref.workflowId, ref.runCaseId, {
      complete: true,
      raw: {
        status: 'success',
        errorMessage: null,
        exitCode: 0,
        agentOutput: 'the real output',
        logs: 'agent logs',
        stdoutTrajectory: null,
        agentUsage: null,
        timings: { sandboxConnectMs: 1, caseExecMs: 2, totalMs: 3 },
        startedAt: now,
        finishedAt: now,
        image: 'bench/busybox:latest',
        containerName: caseContainerName(ref.workflowId, ref.runCaseId, 1),
        attempt: 1,
      },
    });

    const summary = await runIn(
      attempt({ attempt: 2, heartbeatDetails: { containerId: 'container-of-attempt-1', phase: 'exited' } }),
      executeCase,
      ref,
    );

    assert.equal(summary.status, 'success');
    assert.equal(sandbox.created.length, 0, 'no container started');
    assert.ok(!sandbox.events.includes('exec'), 'the agent did not run again');
    assert.deepEqual(sandbox.events, ['remove container-of-attempt-1']);
    const stored = await loadCasePhases(db.pool, ref.workflowId, ref.runCaseId);
    assert.equal(stored?.result.agentOutput, 'the real output');
    assert.equal(stored?.result.attempt, 1);
    assert.equal(await spool.read(ref.workflowId, ref.runCaseId), null);
  });

  test('waiting for a live-container slot is heartbeated (phase waiting_for_container_slot)', async () => {
    const sandbox = new RecordingSandbox();
    let release = () => {};
    const released = new Promise<void>((r) => (release = r));
    const { ref, executeCase } = await oneCaseRun(sandbox, {
      run: async (fn) => {
        await released;
        return fn();
      },
    });
    const env = attempt({ attempt: 1 });
    const heartbeats: unknown[] = [];
    env.on('heartbeat', (details: unknown) => {
      heartbeats.push(details);
      release();
    });

    const summary = await runIn(env, executeCase, ref);

    assert.equal(summary.status, 'success');
    assert.deepEqual(heartbeats[0], { containerId: undefined, phase: 'waiting_for_container_slot' });
    assert.deepEqual(sandbox.events, ['create container-1', 'exec', 'remove container-1']);
  });

  test('a case whose retries ran out is persisted not executed, and what its dead attempts left running is removed by its labels', async () => {
    const sandbox = new RecordingSandbox();
    sandbox.leftovers = [{ id: 'still-running-of-a-dead-attempt' }];
    const { ref, finalizeCase } = await oneCaseRun(sandbox);

    const fin: CaseFinalSummary = await new MockActivityEnvironment({ attempt: 1 }, QUIET).run(finalizeCase, {
      ...ref,
      notExecutedError: 'E_CASE_NOT_EXECUTED: activity Heartbeat timeout',
    });

    assert.equal(fin.status, 'failed');
    assert.deepEqual(sandbox.events, ['remove still-running-of-a-dead-attempt']);
    assert.equal((await getCaseStatuses(db.pool, ref.experimentId)).get(ref.runCaseId), 'failed');
  });

  test('a retry landing in the worker whose earlier attempt Temporal gave up on (heartbeat lapsed) waits for it: the agent runs once', async () => {
    let finishAgent = () => {};
    const agentFinishes = new Promise<void>((r) => (finishAgent = r));
    let agentStarted = () => {};
    const started = new Promise<void>((r) => (agentStarted = r));
    const sandbox = new RecordingSandbox(async () => {
      agentStarted();
      await agentFinishes;
      return AGENT_DONE;
    });
    const { ref, executeCase } = await oneCaseRun(sandbox);
    const first = attempt({ attempt: 1 });
    const firstOutcome = runIn(first, executeCase, ref);
    await started;
    // What the SDK does when Temporal, back after an outage, answers the attempt's heartbeat with
    // "timed out": the attempt's cancellation signal fires with reason TIMED_OUT.
    first.cancel('TIMED_OUT', new ActivityCancellationDetails({ timedOut: true }));
    const secondOutcome = runIn(
      attempt({ attempt: 2, heartbeatDetails: { containerId: 'container-1', phase: 'case_exec' } }),
      executeCase,
      ref,
    );
    finishAgent();

    const [a, b] = await Promise.all([firstOutcome, secondOutcome]);
    assert.equal(a.status, 'success');
    assert.deepEqual(b, a, "the retry's outcome is its predecessor's");
    assert.equal(sandbox.events.filter((e) => e === 'exec').length, 1, 'the agent ran once');
    assert.equal(sandbox.created.length, 1, 'one container');
    assert.equal((await loadCasePhases(db.pool, ref.workflowId, ref.runCaseId))?.result.agentOutput, 'done');
  });

  test('exit code 143 of a container stopped from outside the agent is no result: retried, nothing stored', async () => {
    const killed: ExecResult = {
      exitCode: 143,
      stdout: '',
      stderr: 'Terminated',
      timedOut: false,
      durationMs: 5,
    };
    const sandbox = new RecordingSandbox(async () => killed);
    sandbox.stoppedByOthers = true;
    const { ref, executeCase } = await oneCaseRun(sandbox);

    await assert.rejects(runIn(attempt({ attempt: 1 }), executeCase, ref), (err: unknown) => {
      assert.ok(err instanceof ApplicationFailure, String(err));
      assert.equal(err.type, 'E_SANDBOX_CONTAINER_STOPPED');
      assert.equal(err.nonRetryable, false);
      return true;
    });
    assert.equal(await loadCasePhases(db.pool, ref.workflowId, ref.runCaseId), null, 'no record stored');
    assert.equal(await spool.read(ref.workflowId, ref.runCaseId), null, 'no record spooled');
    assert.deepEqual(sandbox.events, ['create container-1', 'exec', 'remove container-1']);
  });

  test("the agent's own exit code 143 (its container still running) is its failure", async () => {
    const sandbox = new RecordingSandbox(async () => ({
      exitCode: 143,
      stdout: '',
      stderr: '',
      timedOut: false,
      durationMs: 5,
    }));
    const { ref, executeCase } = await oneCaseRun(sandbox);

    const summary = await runIn(attempt({ attempt: 1 }), executeCase, ref);

    assert.equal(summary.status, 'failed');
    assert.equal(summary.errorMessage, 'E_AGENT_EXIT_NON_ZERO: exit code 143');
  });

  test('the worker shutting down mid-case is retried (E_WORKER_SHUTDOWN), a cancel ends it canceled; neither records exit code 143', async () => {
    for (const [reason, details, expected] of [
      ['WORKER_SHUTDOWN', { workerShutdown: true }, 'E_WORKER_SHUTDOWN'],
      ['CANCELLED', { cancelRequested: true }, 'canceled'],
    ] as const) {
      let stopped = () => {};
      const stopArrived = new Promise<void>((r) => (stopped = r));
      let agentStarted = () => {};
      const started = new Promise<void>((r) => (agentStarted = r));
      // The race the issue saw: our stop's SIGTERM ends the command before the abort is noticed.
      const sandbox = new RecordingSandbox(async () => {
        agentStarted();
        await stopArrived;
        return { exitCode: 143, stdout: '', stderr: 'Terminated', timedOut: false, durationMs: 5 };
      });
      const { ref, executeCase } = await oneCaseRun(sandbox);
      const env = attempt({ attempt: 1 });
      const outcome = runIn(env, executeCase, ref);
      await started;
      env.cancel(reason, new ActivityCancellationDetails(details));
      stopped();
      await assert.rejects(outcome, (err: unknown) => {
        if (expected === 'canceled') assert.ok(err instanceof CancelledFailure, String(err));
        else {
          assert.ok(err instanceof ApplicationFailure, String(err));
          assert.equal(err.type, expected);
          assert.equal(err.nonRetryable, false);
        }
        return true;
      });
      assert.equal(
        await loadCasePhases(db.pool, ref.workflowId, ref.runCaseId),
        null,
        `${reason}: nothing stored`,
      );
    }
  });

  test('a spooled record cut before its after command is stored as E_AFTER_EXEC_NOT_RUN; the agent is not run again', async () => {
    const sandbox = new RecordingSandbox();
    const { ref, executeCase } = await oneCaseRun(sandbox);
    const now = new Date().toISOString();
    await spool.write(ref.workflowId, ref.runCaseId, {
      complete: false,
      raw: {
        status: 'success',
        errorMessage: null,
        exitCode: 0,
        agentOutput: 'the real output',
        logs: 'agent logs',
        stdoutTrajectory: null,
        agentUsage: null,
        timings: { sandboxConnectMs: 1, caseExecMs: 2, totalMs: 3 },
        startedAt: now,
        finishedAt: now,
        image: 'bench/busybox:latest',
        containerName: caseContainerName(ref.workflowId, ref.runCaseId, 1),
        attempt: 1,
      },
    });

    const summary = await runIn(attempt({ attempt: 2 }), executeCase, ref);

    assert.equal(summary.status, 'failed');
    assert.match(summary.errorMessage ?? '', /^E_AFTER_EXEC_NOT_RUN: /);
    assert.ok(!sandbox.events.includes('exec'), 'the agent did not run again');
    assert.equal(
      (await loadCasePhases(db.pool, ref.workflowId, ref.runCaseId))?.result.agentOutput,
      'the real output',
    );
  });

  test('a retry past its time budget is refused for good, but only after a finished record was looked for', async () => {
    const sandbox = new RecordingSandbox();
    const { ref, executeCase } = await oneCaseRun(sandbox);
    const longAgo = Date.now() - 3_600_000;

    await assert.rejects(
      runIn(attempt({ attempt: 5, scheduledTimestampMs: longAgo }), executeCase, {
        ...ref,
        retryBudgetSeconds: 600,
      }),
      (err: unknown) => {
        assert.ok(err instanceof ApplicationFailure, String(err));
        assert.equal(err.type, 'E_CASE_RETRY_BUDGET_SPENT');
        assert.equal(err.nonRetryable, true);
        return true;
      },
    );
    assert.equal(sandbox.created.length, 0, 'no container started');
    // Within the budget the same attempt number runs: attempts are not counted.
    const summary = await runIn(
      attempt({ attempt: 5, scheduledTimestampMs: Date.now() - 60_000 }),
      executeCase,
      {
        ...ref,
        retryBudgetSeconds: 600,
      },
    );
    assert.equal(summary.status, 'success');

    // A spooled, finished record past the budget is still stored: the budget refuses new runs of
    // the agent, never a result that already exists.
    const late = await oneCaseRun(sandbox);
    const now = new Date().toISOString();
    await spool.write(late.ref.workflowId, late.ref.runCaseId, {
      complete: true,
      raw: {
        status: 'success',
        errorMessage: null,
        exitCode: 0,
        agentOutput: 'the late output',
        logs: 'agent logs',
        stdoutTrajectory: null,
        agentUsage: null,
        timings: { sandboxConnectMs: 1, caseExecMs: 2, totalMs: 3 },
        startedAt: now,
        finishedAt: now,
        image: 'bench/busybox:latest',
        containerName: caseContainerName(late.ref.workflowId, late.ref.runCaseId, 1),
        attempt: 1,
      },
    });
    const created = sandbox.created.length;
    const stored = await runIn(attempt({ attempt: 5, scheduledTimestampMs: longAgo }), late.executeCase, {
      ...late.ref,
      retryBudgetSeconds: 600,
    });
    assert.equal(stored.status, 'success');
    assert.equal(sandbox.created.length, created, 'no container started for the spooled case');
    assert.equal(
      (await loadCasePhases(db.pool, late.ref.workflowId, late.ref.runCaseId))?.result.agentOutput,
      'the late output',
    );
  });
});
