import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { workflowIdForRun } from '../../src/domain/experiment-run';
import { parseExperimentMessage } from '../../src/domain/message';
import { findTemporalBinary } from '../../src/temporal/dev-server';
import { deadLetterQueueName } from '../../bridge/dead-letter';
import { fuzzedMessages } from './fuzz-messages';
import { measureRuns, passes, type FaultWindow, type MeasuredOutcome, type ScenarioOutcome } from './outcome';
import { publishAll, queueDepth, type Publication } from './publisher';
import { openScenarioStack, type ScenarioStack, type SpawnedProcess } from './scenario-stack';
import type { ChaosServices } from './services';

const exec = promisify(execFile);

export interface Scenario {
  name: string;
  /** Deterministic and about a minute or less: also run by `npm test` (test/e2e/chaos-fast.test.ts). */
  fast: boolean;
  run(services: ChaosServices): Promise<MeasuredOutcome>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(
  what: string,
  probe: () => boolean | Promise<boolean>,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

/** Executions of this stack's cases seen by the counter: started and finished. */
function executionCounts(stack: ScenarioStack): { started: number; finished: number } {
  let started = 0;
  let finished = 0;
  for (const run of stack.runs)
    for (const id of run.seeded.runCaseIds) {
      const list = stack.services.counter.executions.get(String(id)) ?? [];
      started += list.length;
      finished += list.filter((e) => e.doneAt !== null).length;
    }
  return { started, finished };
}

/** Every case ended `success`: a fault that none of them should notice. */
function requireAllSuccess(o: MeasuredOutcome, expected: number): void {
  if (o.succeeded !== expected) o.violations.push(`${o.succeeded} of ${expected} cases succeeded`);
}

/** Runs `body` on a fresh scenario stack and always closes it. */
async function withStack<T>(
  services: ChaosServices,
  env: Record<string, string>,
  body: (stack: ScenarioStack) => Promise<T>,
): Promise<T> {
  const stack = await openScenarioStack(services, { env });
  try {
    return await body(stack);
  } finally {
    await stack.close();
  }
}

/** Valid messages for `n` one-case experiments, registered as runs of the stack (by their workflow id). */
async function validIntake(stack: ScenarioStack, n: number, sleepSeconds: number): Promise<Publication[]> {
  const out: Publication[] = [];
  for (let i = 0; i < n; i += 1) {
    const { seeded, message } = await stack.seedMessage(1, sleepSeconds);
    const parsed = parseExperimentMessage(JSON.stringify(message));
    if (!parsed.ok) throw new Error('a valid chaos message does not parse');
    await stack.db.pool.query('UPDATE experiments SET queue_message_id = $2 WHERE id = $1', [
      seeded.experimentId,
      parsed.message.message_id,
    ]);
    const workflowId = workflowIdForRun(seeded.experimentId, parsed.message.message_id);
    stack.runs.push({
      seeded,
      message: parsed.message,
      workflowId,
      handle: stack.client.workflow.getHandle(workflowId),
    });
    out.push({ body: JSON.stringify(message), messageId: parsed.message.message_id });
  }
  return out;
}

/** Workflows on this stack's task queue, by experiment id (from the workflow id). */
async function workflowsByExperiment(stack: ScenarioStack): Promise<Map<string, number>> {
  const byExperiment = new Map<string, number>();
  for await (const w of stack.client.workflow.list({ query: `TaskQueue = '${stack.taskQueue}'` })) {
    const id = /^experiment-(\d+)-/.exec(w.workflowId)?.[1] ?? w.workflowId;
    byExperiment.set(id, (byExperiment.get(id) ?? 0) + 1);
  }
  return byExperiment;
}

/** Messages of valid experiments that started no workflow, and workflows beyond one per experiment. */
async function intakeAccounting(stack: ScenarioStack, o: MeasuredOutcome): Promise<Map<string, number>> {
  const byExperiment = await workflowsByExperiment(stack);
  for (const run of stack.runs) {
    const n = byExperiment.get(String(run.seeded.experimentId)) ?? 0;
    if (n === 0) o.messagesLost += 1;
    if (n > 1) o.messagesDuplicated += n - 1;
  }
  return byExperiment;
}

/** A run scenario: start workers, start the run(s), inject the fault, wait for the end, measure. */
async function runScenario(
  services: ChaosServices,
  opts: {
    env?: Record<string, string>;
    cases: number;
    sleepSeconds: number;
    settings?: Parameters<ScenarioStack['startRun']>[0]['settings'];
    faultKillsContainers: boolean;
    expectSuccess: boolean;
    endTimeoutMs: number;
    fault: (stack: ScenarioStack, worker: SpawnedProcess) => Promise<FaultWindow[]>;
    extra?: (stack: ScenarioStack, o: MeasuredOutcome) => Promise<void>;
  },
): Promise<MeasuredOutcome> {
  return withStack(services, opts.env ?? {}, async (stack) => {
    const worker = stack.worker();
    await stack.startRun({ cases: opts.cases, sleepSeconds: opts.sleepSeconds, settings: opts.settings });
    const faults = await opts.fault(stack, worker);
    const ended = await stack.waitForRunsToEnd(opts.endTimeoutMs);
    const o = await measureRuns(stack, { faults, faultKillsContainers: opts.faultKillsContainers, ended });
    if (opts.expectSuccess) requireAllSuccess(o, opts.cases);
    await opts.extra?.(stack, o);
    return o;
  });
}

const workerKill: Scenario = {
  name: 'worker kill -9 ×3 (50 cases)',
  fast: false,
  run: (services) =>
    runScenario(services, {
      cases: 50,
      sleepSeconds: 2,
      faultKillsContainers: true,
      expectSuccess: true,
      endTimeoutMs: 360_000,
      async fault(stack, first) {
        const faults: FaultWindow[] = [];
        let current = first;
        for (const after of [8, 20, 32]) {
          await until(
            `${after} executions finished`,
            () => executionCounts(stack).finished >= after,
            240_000,
          );
          const at = Date.now();
          current.child.kill('SIGKILL');
          await current.exited;
          faults.push({ from: at, to: at });
          current = stack.worker();
        }
        return faults;
      },
    }),
};

const rabbitRestart: Scenario = {
  name: 'RabbitMQ restart during intake (200)',
  fast: false,
  run: (services) =>
    withStack(services, { CONSUMER_CONCURRENT_CASES: '1' }, async (stack) => {
      stack.worker();
      stack.bridge();
      const messages = await validIntake(stack, 200, 0);
      const faults: FaultWindow[] = [];
      const { resent } = await publishAll(services.rabbitmq.url, stack.queue, messages, {
        async beforeEach(i) {
          if (i !== 80) return;
          const from = Date.now();
          await services.rabbitmq.stop();
          await services.rabbitmq.start();
          faults.push({ from, to: Date.now() });
        },
      });
      const ended = await stack.waitForRunsToEnd(240_000);
      const o = await measureRuns(stack, { faults, faultKillsContainers: false, ended });
      requireAllSuccess(o, 200);
      await intakeAccounting(stack, o);
      if (resent > 0) o.notes.push(`${resent} publish(es) re-sent by the producer after the restart`);
      return o;
    }),
};

const redisDown: Scenario = {
  name: 'Redis down during intake (30)',
  fast: true,
  run: (services) =>
    withStack(services, {}, async (stack) => {
      stack.worker();
      stack.bridge();
      const messages = await validIntake(stack, 30, 0);
      const faults: FaultWindow[] = [];
      let from = 0;
      await publishAll(services.rabbitmq.url, stack.queue, messages, {
        async beforeEach(i) {
          if (i === 10) {
            from = Date.now();
            await services.redis.stop();
          }
          if (i === 20) {
            await sleep(3000);
            await services.redis.start();
            faults.push({ from, to: Date.now() });
          }
        },
      });
      const ended = await stack.waitForRunsToEnd(120_000);
      const o = await measureRuns(stack, { faults, faultKillsContainers: false, ended });
      requireAllSuccess(o, 30);
      await intakeAccounting(stack, o);
      return o;
    }),
};

const postgresMidRun: Scenario = {
  name: 'Postgres restart mid-run (20 cases)',
  fast: false,
  run: (services) =>
    runScenario(services, {
      cases: 20,
      sleepSeconds: 2,
      faultKillsContainers: false,
      expectSuccess: true,
      endTimeoutMs: 180_000,
      async fault(stack) {
        await until('4 cases finished', () => executionCounts(stack).finished >= 4, 120_000);
        const from = Date.now();
        await services.postgres.stop('fast');
        await sleep(5000);
        await services.postgres.start();
        return [{ from, to: Date.now() }];
      },
    }),
};

const postgresWhileFinishing: Scenario = {
  name: 'Postgres down while cases finish (8)',
  fast: true,
  run: (services) =>
    runScenario(services, {
      cases: 8,
      sleepSeconds: 4,
      faultKillsContainers: false,
      expectSuccess: true,
      endTimeoutMs: 180_000,
      async fault(stack) {
        // Down from just before the first executions end until well after: their results must wait.
        await until('4 cases started', () => executionCounts(stack).started >= 4, 120_000);
        await sleep(2500);
        const from = Date.now();
        const finishedBefore = executionCounts(stack).finished;
        await services.postgres.stop('immediate');
        await until(
          'an execution finished while Postgres is down',
          () => executionCounts(stack).finished > finishedBefore,
          30_000,
        );
        await sleep(10_000);
        await services.postgres.start();
        return [{ from, to: Date.now() }];
      },
    }),
};

const temporalRestart: Scenario = {
  name: 'Temporal dev server restart mid-run (12)',
  fast: false,
  run: (services) =>
    runScenario(services, {
      cases: 12,
      sleepSeconds: 3,
      faultKillsContainers: false,
      expectSuccess: true,
      endTimeoutMs: 180_000,
      async fault(stack) {
        await until('3 cases finished', () => executionCounts(stack).finished >= 3, 120_000);
        const from = Date.now();
        await services.temporal.stop('SIGKILL');
        await sleep(5000);
        await services.temporal.start();
        return [{ from, to: Date.now() }];
      },
    }),
};

const dockerdRestart: Scenario = {
  name: 'dockerd restart mid-case (6)',
  fast: true,
  run: (services) =>
    runScenario(services, {
      cases: 6,
      sleepSeconds: 8,
      faultKillsContainers: true,
      expectSuccess: true,
      endTimeoutMs: 180_000,
      async fault(stack) {
        await until('4 cases started', () => executionCounts(stack).started >= 4, 120_000);
        await sleep(1000);
        const from = Date.now();
        await services.dockerd.stop('SIGTERM');
        await services.dockerd.start();
        return [{ from, to: Date.now() }];
      },
    }),
};

/** A reaper that sweeps every 2 s and judges any container older than 1 s. */
const EAGER_REAPER = { SANDBOX_REAPER_INTERVAL_SECONDS: '2', SANDBOX_REAPER_MIN_AGE_SECONDS: '1' };

const temporalDownReaper: Scenario = {
  name: 'Temporal unreachable (30 s) while the reaper runs',
  fast: true,
  run: (services) =>
    runScenario(services, {
      env: EAGER_REAPER,
      cases: 2,
      sleepSeconds: 45,
      faultKillsContainers: false,
      expectSuccess: true,
      endTimeoutMs: 180_000,
      async fault(stack) {
        await until('2 cases started', () => executionCounts(stack).started >= 2, 120_000);
        await sleep(2000);
        const from = Date.now();
        await services.temporal.stop('SIGKILL');
        // Longer than the Temporal client's own gRPC retries (~20 s): the reaper's describe() fails.
        await sleep(30_000);
        await services.temporal.start();
        return [{ from, to: Date.now() }];
      },
    }),
};

const twoDeployments: Scenario = {
  name: 'two deployments on one Docker host',
  fast: true,
  run: (services) =>
    withStack(services, { AGENTBENCH_DEPLOYMENT_ID: 'chaos-a' }, async (a) => {
      a.worker();
      await a.startRun({ cases: 4, sleepSeconds: 15 });
      await until('4 cases of deployment A started', () => executionCounts(a).started >= 4, 120_000);
      // Deployment B: its own database and task queue, an eager reaper, the same Docker daemon.
      const ended = await withStack(
        services,
        { AGENTBENCH_DEPLOYMENT_ID: 'chaos-b', ...EAGER_REAPER },
        async (b) => {
          b.worker();
          return a.waitForRunsToEnd(120_000);
        },
      );
      const o = await measureRuns(a, { faults: [], faultKillsContainers: false, ended });
      requireAllSuccess(o, 4);
      return o;
    }),
};

const liveLimit: Scenario = {
  name: 'live-container limit saturated (limit 1, 3×20 s, 1 attempt)',
  fast: true,
  run: (services) =>
    runScenario(services, {
      // One attempt: the third case waits 40 s for the slot, past the 30 s heartbeat timeout, with
      // no retry to hide it (with the default 3 attempts it takes cases of 35 s to show, issue 13 §3).
      env: { DOCKER_MAX_LIVE_CONTAINERS: '1', CONSUMER_MAX_RETRIES: '1' },
      cases: 3,
      sleepSeconds: 20,
      faultKillsContainers: false,
      expectSuccess: true,
      endTimeoutMs: 180_000,
      fault: () => Promise.resolve([]),
    }),
};

const HISTORY_CAP = 60;
/** Events a run may add past the cap before it continues as new (the in-flight cases' own). */
const HISTORY_SLACK = 40;

const historyCap: Scenario = {
  name: `long cases crossing a history cap of ${HISTORY_CAP}`,
  fast: true,
  run: (services) =>
    runScenario(services, {
      env: { CONSUMER_CONCURRENT_CASES: '2' },
      cases: 4,
      sleepSeconds: 20,
      settings: { maxHistoryEvents: HISTORY_CAP },
      faultKillsContainers: false,
      expectSuccess: true,
      endTimeoutMs: 180_000,
      fault: () => Promise.resolve([]),
      async extra(stack, o) {
        const run = stack.runs[0];
        if (!run) {
          o.violations.push('no run was started');
          return;
        }
        let longest = 0;
        let chain = 0;
        for await (const w of stack.client.workflow.list({ query: `WorkflowId = '${run.workflowId}'` })) {
          chain += 1;
          longest = Math.max(longest, w.historyLength);
        }
        o.notes.push(`${chain} run(s) in the chain, longest history ${longest} events`);
        if (chain < 2) o.violations.push(`no continue-as-new: ${chain} run(s) in the chain`);
        if (longest > HISTORY_CAP + HISTORY_SLACK)
          o.violations.push(`a run's history reached ${longest} events (cap ${HISTORY_CAP})`);
      },
    }),
};

const terminate: Scenario = {
  name: '`temporal workflow terminate` mid-run (8)',
  fast: true,
  run: (services) =>
    runScenario(services, {
      cases: 8,
      sleepSeconds: 10,
      faultKillsContainers: false,
      expectSuccess: false,
      endTimeoutMs: 60_000,
      async fault(stack) {
        await until('4 cases started', () => executionCounts(stack).started >= 4, 120_000);
        const temporal = findTemporalBinary();
        const run = stack.runs[0];
        if (!temporal || !run) throw new Error('no temporal CLI (scripts/setup installs it)');
        const at = Date.now();
        await exec(temporal, [
          'workflow',
          'terminate',
          '--address',
          services.temporal.address,
          '--workflow-id',
          run.workflowId,
          '--reason',
          'chaos: terminated from outside',
        ]);
        return [{ from: at, to: at }];
      },
    }),
};

const fuzz: Scenario = {
  name: '1 000 fuzzed messages + 20 valid',
  fast: false,
  run: (services) =>
    withStack(services, {}, async (stack) => {
      stack.worker();
      stack.bridge();
      const valid = await validIntake(stack, 20, 0);
      const bad = fuzzedMessages(1000);
      // Valid ones spread through the fuzz, every 50th message.
      const all: Publication[] = [];
      bad.forEach((m, i) => {
        all.push(m);
        const v = valid[Math.floor(i / 50)];
        if (i % 50 === 49 && v) all.push(v);
      });
      await publishAll(services.rabbitmq.url, stack.queue, all);
      const ended = await stack.waitForRunsToEnd(180_000);
      // The bridge has had the valid runs' time to drain the rest of the queue.
      const dlq = deadLetterQueueName(stack.queue);
      let depth = await queueDepth(services.rabbitmq.url, stack.queue);
      await until(
        'the queue to drain',
        async () => (depth = await queueDepth(services.rabbitmq.url, stack.queue)) === 0,
        30_000,
      ).catch(() => undefined);
      const deadLettered = (await queueDepth(services.rabbitmq.url, dlq)) ?? 0;
      const o = await measureRuns(stack, { faults: [], faultKillsContainers: false, ended });
      requireAllSuccess(o, 20);
      const byExperiment = await intakeAccounting(stack, o);
      const validIds = new Set(stack.runs.map((r) => String(r.seeded.experimentId)));
      const fuzzStarted = [...byExperiment.entries()]
        .filter(([id]) => !validIds.has(id))
        .reduce((n, [, c]) => n + c, 0);
      const circling = depth ?? 0;
      const unaccounted = Math.max(0, bad.length - deadLettered - fuzzStarted - circling);
      o.messagesLost += unaccounted;
      o.notes.push(`${deadLettered} of ${bad.length} fuzzed dead-lettered`);
      if (fuzzStarted > 0) o.violations.push(`${fuzzStarted} fuzzed message(s) started a workflow`);
      if (circling > 0) o.violations.push(`${circling} message(s) still in the queue (not dead-lettered)`);
      return o;
    }),
};

export const SCENARIOS: Scenario[] = [
  workerKill,
  rabbitRestart,
  redisDown,
  postgresMidRun,
  postgresWhileFinishing,
  temporalRestart,
  dockerdRestart,
  temporalDownReaper,
  twoDeployments,
  liveLimit,
  historyCap,
  terminate,
  fuzz,
];

/** Runs one scenario and turns anything it throws into a failed row. */
export async function runOne(scenario: Scenario, services: ChaosServices): Promise<ScenarioOutcome> {
  const started = Date.now();
  let measured: MeasuredOutcome;
  try {
    measured = await scenario.run(services);
  } catch (err) {
    measured = {
      terminal: 0,
      total: 0,
      succeeded: 0,
      rerunAfterFault: 0,
      ranTwice: 0,
      resultsLost: 0,
      containersLeaked: 0,
      rowsActive: 0,
      messagesLost: 0,
      messagesDuplicated: 0,
      ended: false,
      violations: [`scenario error: ${err instanceof Error ? err.message : String(err)}`],
      notes: [],
    };
  }
  return {
    scenario: scenario.name,
    ...measured,
    seconds: Math.round((Date.now() - started) / 1000),
    pass: passes(measured),
  };
}
