import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseExperimentMessage } from '../../src/domain/message';
import type { ExperimentRunResult, RunSettings } from '../../src/domain/experiment-run';
import { createLogger } from '../../src/logger';
import { startExperimentRun } from '../../src/temporal/run-starter';
import { seedExperiment, type SeededExperiment } from '../support/database';
import { buildPlatformMessage } from '../support/platform';
import { startPrivatePostgres, type PrivatePostgres } from '../support/private-postgres';
import { countedAgentCommand, startHitCounter, type HitCounter } from '../support/hit-counter';
import { startPrivateTemporal, type PrivateTemporal } from '../support/private-temporal';
import { reapIsolatedNetworks } from '../../src/docker/isolated-network';
import { LABELS } from '../../src/docker/labels';
import {
  captureLogger,
  eventually,
  managedContainers,
  spawnWorker,
  startStack,
  type Stack,
} from '../support/stack';

/**
 * Faults while cases run, against the real services (issue 13 items 2 and 3): agent executions
 * are counted from outside the worker — each case's command calls a host HTTP counter once.
 */

const log = createLogger({ level: 'silent' });

async function startRun(
  stack: Stack,
  seeded: SeededExperiment,
  caseCommand: string,
  opts: { overrides?: Partial<RunSettings>; allowHostPorts?: number[] } = {},
) {
  const raw = buildPlatformMessage(seeded, {
    queue: 'direct',
    runtimeSpec: {
      agent_image: 'bench/busybox:latest',
      sandbox_start_command: 'sleep 3600',
      case_exec_command: caseCommand,
      // Case networks are isolated: the host's counter is reachable only when the spec opens it.
      ...(opts.allowHostPorts ? { allow_host_ports: opts.allowHostPorts } : {}),
    },
  });
  const parsed = parseExperimentMessage(JSON.stringify(raw));
  assert.ok(parsed.ok);
  await stack.db.pool.query('UPDATE experiments SET queue_message_id = $2 WHERE id = $1', [
    seeded.experimentId,
    parsed.message.message_id,
  ]);
  const r = await startExperimentRun(
    { client: stack.client, pool: stack.db.pool, config: stack.config, log },
    parsed.message,
    parsed.message.message_id,
    opts.overrides ?? {},
  );
  return stack.client.workflow.getHandle(r.workflowId);
}

async function rows(stack: Stack, experimentId: number) {
  const { rows: r } = await stack.db.pool.query<{
    id: number;
    status: string;
    agent_output: unknown;
    error_message: string | null;
  }>('SELECT id, status, agent_output, error_message FROM run_cases WHERE experiment_id = $1 ORDER BY id', [
    experimentId,
  ]);
  return r;
}

/**
 * Seeds `cases` cases whose agent calls the host counter and then runs `agentSeconds`, starts their
 * run (its workflow id goes into `workflowIds` at once, for the clean-up) and returns when every
 * agent has started.
 */
async function startCountedRun(
  stack: Stack,
  executions: HitCounter,
  run: { cases: number; agentSeconds: number; workflowIds: string[] },
) {
  const seeded = await seedExperiment(stack.db.pool, { cases: run.cases });
  const handle = await startRun(stack, seeded, countedAgentCommand(executions.port, run.agentSeconds), {
    allowHostPorts: [executions.port],
  });
  run.workflowIds.push(handle.workflowId);
  await eventually(
    async () =>
      seeded.runCaseIds.every((id) => (executions.executions.get(String(id)) ?? []).length === 1)
        ? true
        : undefined,
    120_000,
    'every agent started',
  );
  return { seeded, handle };
}

type SpawnedWorker = ReturnType<typeof spawnWorker>;

/** A test's workers gone, then its containers and networks, then its stack. */
async function tearDown(
  stack: Stack,
  workers: { first: SpawnedWorker; second: SpawnedWorker | undefined },
  workflowIds: string[],
): Promise<void> {
  workers.first.child.kill('SIGKILL');
  if (workers.second) {
    workers.second.child.kill('SIGTERM');
    await workers.second.exited;
  }
  assert.deepEqual(await managedContainers(stack.docker, workflowIds), [], 'no container left');
  await reapIsolatedNetworks(stack.docker, { deploymentId: stack.config.deploymentId, minAgeMs: 0 });
  await stack.stop();
}

describe('case durability under faults (real Docker, Temporal dev server, a private Postgres)', () => {
  let counter: HitCounter | undefined;
  after(() => counter?.close());

  test('Postgres stopped while cases finish and back ~20 s later: every case ends with its real output, each agent ran once', async () => {
    counter = await startHitCounter();
    const pg: PrivatePostgres = await startPrivatePostgres();
    let stack: Stack | undefined;
    const workflowIds: string[] = [];
    try {
      stack = await startStack({ databaseAdminUrl: pg.adminUrl, env: { CONSUMER_CONCURRENT_CASES: '6' } });
      const seeded = await seedExperiment(stack.db.pool, { cases: 6 });
      const handle = await startRun(
        stack,
        seeded,
        `sleep 10; wget -q -O /dev/null http://host.docker.internal:${counter.port}/hit/{{run_case.run_case_id}}; echo '{"output":"answer-{{run_case.run_case_id}}"}'`,
        { allowHostPorts: [counter.port] },
      );
      workflowIds.push(handle.workflowId);
      await eventually(
        async () =>
          (await rows(stack as Stack, seeded.experimentId)).every((r) => r.status === 'running')
            ? true
            : undefined,
        120_000,
        'every case running',
      );
      // The agents are in their `sleep`: they finish while the database is down.
      await pg.stop();
      assert.equal(counter.hits.size, 0, 'no agent had finished before the outage');
      const hits = counter.hits;
      await eventually(
        async () => (seeded.runCaseIds.every((id) => (hits.get(String(id)) ?? 0) >= 1) ? true : undefined),
        60_000,
        'every agent finished',
      );
      // ~20 s of outage in all, most of it after the agents finished.
      await new Promise((r) => setTimeout(r, 12_000));
      await pg.start();

      const result = (await handle.result()) as ExperimentRunResult;
      assert.equal(result.outcome, 'completed');
      const final = await rows(stack, seeded.experimentId);
      assert.deepEqual(
        final.map((r) => ({ status: r.status, output: r.agent_output })),
        seeded.runCaseIds.map((id) => ({ status: 'success', output: `answer-${id}` })),
        JSON.stringify(final.map((r) => r.error_message)),
      );
      for (const id of seeded.runCaseIds)
        assert.equal(hits.get(String(id)), 1, `the agent of case ${id} ran once`);
    } finally {
      // A failure during the outage must not leave the database down for the clean-up.
      await pg.start().catch(() => undefined);
      if (stack) {
        assert.deepEqual(await managedContainers(stack.docker, workflowIds), [], 'no container left');
        await stack.stop();
      }
      await pg.destroy();
    }
  });

  test('live-container limit 1 and 4 cases of ~35 s: waiting for the slot is heartbeated, every case succeeds', async () => {
    const stack = await startStack({
      env: { CONSUMER_CONCURRENT_CASES: '4', DOCKER_MAX_LIVE_CONTAINERS: '1' },
    });
    const workflowIds: string[] = [];
    try {
      const seeded = await seedExperiment(stack.db.pool, { cases: 4 });
      const handle = await startRun(stack, seeded, `sleep 35; echo '{"output":"ok"}'`);
      workflowIds.push(handle.workflowId);
      const result = (await handle.result()) as ExperimentRunResult;
      assert.equal(result.outcome, 'completed');
      const final = await rows(stack, seeded.experimentId);
      assert.deepEqual(
        final.map((r) => r.status),
        ['success', 'success', 'success', 'success'],
        JSON.stringify(final.map((r) => r.error_message)),
      );
      // Each case's container phase ran once: none timed out waiting (heartbeat timeout 30 s).
      const events = (await handle.fetchHistory()).events ?? [];
      const retried = events.filter((e) => (e.activityTaskStartedEventAttributes?.attempt ?? 1) > 1).length;
      assert.equal(retried, 0, 'no activity attempt was retried');
    } finally {
      assert.deepEqual(await managedContainers(stack.docker, workflowIds), [], 'no container left');
      await stack.stop();
    }
  });

  test('kill -9 of the worker after the agent finished, before its result was stored: the retry stores the spooled output, each agent ran once', async () => {
    const executions = counter ?? (counter = await startHitCounter());
    const stack = await startStack({ worker: false, env: { CONSUMER_CONCURRENT_CASES: '3' } });
    const workflowIds: string[] = [];
    // The first worker stands still right after each case command returned (and was spooled):
    // the window in which a kill used to lose the output and make the retry run the agent again.
    const first = spawnWorker({ ...stack.env, AGENTBENCH_FAULT_PAUSE_AFTER_CASE_EXEC_MS: '600000' });
    let second: ReturnType<typeof spawnWorker> | undefined;
    try {
      const seeded = await seedExperiment(stack.db.pool, { cases: 3 });
      const handle = await startRun(stack, seeded, countedAgentCommand(executions.port, 1), {
        allowHostPorts: [executions.port],
      });
      workflowIds.push(handle.workflowId);
      await eventually(
        async () =>
          (first.output().match(/FAULT_PAUSE_AFTER_CASE_EXEC/g) ?? []).length >= 3 ? true : undefined,
        120_000,
        'every case command returned and the worker paused',
      );
      for (const id of seeded.runCaseIds) {
        const runs = executions.executions.get(String(id)) ?? [];
        assert.equal(runs.length, 1, `case ${id} ran once before the kill`);
        assert.ok(runs[0]?.doneAt, `case ${id}'s agent finished before the kill`);
      }
      assert.deepEqual(
        (await rows(stack, seeded.experimentId)).map((r) => r.status),
        ['running', 'running', 'running'],
        'nothing stored yet',
      );
      first.child.kill('SIGKILL');
      await first.exited;

      second = spawnWorker(stack.env);
      const result = (await handle.result()) as ExperimentRunResult;
      assert.equal(result.outcome, 'completed');
      const final = await rows(stack, seeded.experimentId);
      for (const r of final) {
        const runs = executions.executions.get(String(r.id)) ?? [];
        assert.equal(runs.length, 1, `the agent of case ${r.id} ran once (${runs.length})`);
        assert.equal(r.status, 'success', r.error_message ?? '');
        assert.equal(r.agent_output, runs[0]?.nonce, 'the stored output is that one execution');
      }
      assert.match(second.output(), /CASE_RESULT_FROM_SPOOL/);
    } finally {
      await tearDown(stack, { first, second }, workflowIds);
    }
  });

  test("kill -9 of the worker while its agents run: each retry adopts the case's container and waits for the agent, each agent ran once", async () => {
    const executions = counter ?? (counter = await startHitCounter());
    const stack = await startStack({ worker: false, env: { CONSUMER_CONCURRENT_CASES: '2' } });
    const workflowIds: string[] = [];
    const first = spawnWorker(stack.env);
    let second: ReturnType<typeof spawnWorker> | undefined;
    try {
      // Longer than the heartbeat timeout (30 s) that makes Temporal retry: the agents still run then.
      const { seeded, handle } = await startCountedRun(stack, executions, {
        cases: 2,
        agentSeconds: 40,
        workflowIds,
      });
      const caseNetworks = (
        await stack.docker.listContainers({
          filters: { label: [`${LABELS.workflowId}=${handle.workflowId}`] },
        })
      ).flatMap((c) => Object.keys(c.NetworkSettings.Networks));
      assert.equal(caseNetworks.length, 2, 'each case on a network of its own');
      first.child.kill('SIGKILL');
      await first.exited;

      second = spawnWorker(stack.env);
      const result = (await handle.result()) as ExperimentRunResult;
      assert.equal(result.outcome, 'completed');
      for (const r of await rows(stack, seeded.experimentId)) {
        const runs = executions.executions.get(String(r.id)) ?? [];
        assert.equal(runs.length, 1, `the agent of case ${r.id} ran once (${runs.length})`);
        assert.ok(runs[0]?.doneAt, 'and finished');
        assert.equal(r.status, 'success', r.error_message ?? '');
        assert.equal(r.agent_output, runs[0]?.nonce, "the stored output is that execution's");
      }
      const adopted = second.output().match(/CASE_CONTAINER_ADOPTED/g) ?? [];
      assert.equal(adopted.length, 2, 'both containers adopted');
      const left = await stack.docker.listNetworks();
      assert.deepEqual(
        left.map((n) => n.Name).filter((n) => caseNetworks.includes(n)),
        [],
        "the killed worker's case networks are removed with their containers",
      );
    } finally {
      await tearDown(stack, { first, second }, workflowIds);
    }
  });

  test('Temporal down 60 s while agents run: heartbeats lapse, each retry joins its still-running attempt, each agent ran once', async () => {
    const executions = counter ?? (counter = await startHitCounter());
    const temporal: PrivateTemporal = await startPrivateTemporal();
    const worker = captureLogger('info');
    let stack: Stack | undefined;
    const workflowIds: string[] = [];
    try {
      stack = await startStack({
        log: worker.log,
        env: { CONSUMER_CONCURRENT_CASES: '3', TEMPORAL_ADDRESS: temporal.address },
      });
      // Longer than the outage: the agents are still running when Temporal is back.
      const { seeded, handle } = await startCountedRun(stack, executions, {
        cases: 3,
        agentSeconds: 100,
        workflowIds,
      });
      await temporal.stop();
      // The outage itself (a fault's duration, not a wait for a condition): past the 30 s heartbeat timeout.
      await new Promise((r) => setTimeout(r, 60_000));
      await temporal.start();

      const result = (await handle.result()) as ExperimentRunResult;
      assert.equal(result.outcome, 'completed');
      const final = await rows(stack, seeded.experimentId);
      for (const r of final) {
        const runs = executions.executions.get(String(r.id)) ?? [];
        assert.equal(runs.length, 1, `the agent of case ${r.id} ran once (${runs.length})`);
        assert.equal(r.status, 'success', r.error_message ?? '');
        assert.equal(r.agent_output, runs[0]?.nonce);
      }
      const events = (await handle.fetchHistory()).events ?? [];
      const retried = events.filter((e) => (e.activityTaskStartedEventAttributes?.attempt ?? 1) > 1).length;
      const joined = worker.lines.filter((l) => l.code === 'CASE_ATTEMPT_JOINED').length;
      console.log(`# container-phase attempts after the first: ${retried}, joined: ${joined}`);
      assert.ok(retried >= 1, 'the outage lapsed heartbeats (the fault happened)');
      assert.equal(joined, retried, 'every retry joined its still-running attempt');
    } finally {
      await temporal.start().catch(() => undefined);
      if (stack) {
        assert.deepEqual(await managedContainers(stack.docker, workflowIds), [], 'no container left');
        await stack.stop();
      }
      await temporal.destroy();
    }
  });

  test('worker shutdown mid-case (SIGTERM, no grace): retried on another worker as E_WORKER_SHUTDOWN, never recorded as the agent exiting 143', async () => {
    const executions = counter ?? (counter = await startHitCounter());
    const stack = await startStack({ worker: false, env: { CONSUMER_CONCURRENT_CASES: '2' } });
    const workflowIds: string[] = [];
    const first = spawnWorker({ ...stack.env, WORKER_SHUTDOWN_GRACE_SECONDS: '0' });
    let second: ReturnType<typeof spawnWorker> | undefined;
    try {
      const { seeded, handle } = await startCountedRun(stack, executions, {
        cases: 2,
        agentSeconds: 20,
        workflowIds,
      });
      first.child.kill('SIGTERM');
      await first.exited;
      assert.match(first.output(), /CASE_EXEC_WORKER_SHUTDOWN/);

      second = spawnWorker(stack.env);
      const result = (await handle.result()) as ExperimentRunResult;
      assert.equal(result.outcome, 'completed');
      for (const r of await rows(stack, seeded.experimentId)) {
        assert.equal(r.status, 'success', r.error_message ?? '');
        const runs = executions.executions.get(String(r.id)) ?? [];
        // The execution our shutdown cut, then the retry's (the cut one counted apart).
        assert.equal(runs.length, 2, `case ${r.id}: ${runs.length} executions`);
        assert.equal(runs[0]?.doneAt, null, 'the first execution was cut');
        assert.equal(r.agent_output, runs[1]?.nonce);
      }
      // A retried attempt's start carries the failure of the one before (failed attempts that were
      // retried leave no event of their own).
      const failures = ((await handle.fetchHistory()).events ?? []).flatMap((e) => {
        const started = e.activityTaskStartedEventAttributes;
        return started && (started.attempt ?? 1) > 1 && started.lastFailure ? [started.lastFailure] : [];
      });
      assert.equal(failures.length, 2, 'both cut attempts were retried');
      for (const f of failures) assert.match(f.message ?? '', /^E_WORKER_SHUTDOWN/);
    } finally {
      await tearDown(stack, { first, second }, workflowIds);
    }
  });
});
