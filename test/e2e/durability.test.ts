import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { defaultPayloadConverter } from '@temporalio/common';
import { parseExperimentMessage } from '../../src/domain/message';
import type { ExperimentRunResult, RunSettings } from '../../src/domain/experiment-run';
import { startExperimentRun } from '../../src/temporal/run-starter';
import { findTemporalBinary } from '../../src/temporal/dev-server';
import { createLogger } from '../../src/logger';
import { reapIsolatedNetworks } from '../../src/docker/isolated-network';
import { seedExperiment, type SeededExperiment } from '../support/database';
import { startHitCounter, type HitCounter } from '../support/hit-counter';
import { buildPlatformMessage } from '../support/platform';
import { eventually, managedContainers, spawnWorker, startStack, type Stack } from '../support/stack';

const run = promisify(execFile);

describe('durability, cancellation and termination on the real Temporal dev server', () => {
  let stack: Stack;
  let counter: HitCounter;
  const workflowIds: string[] = [];
  const log = createLogger({ level: 'silent' });

  before(async () => {
    stack = await startStack({ worker: false, env: { CONSUMER_CONCURRENT_CASES: '4' } });
    counter = await startHitCounter();
  });

  after(async () => {
    await counter?.close();
    assert.deepEqual(await managedContainers(stack.docker, workflowIds), [], 'no container of ours is left');
    // A worker killed mid-case leaves its case network; a worker's start-up sweep removes such
    // networks only after SANDBOX_REAPER_MIN_AGE_SECONDS (an hour in tests), so: now.
    await reapIsolatedNetworks(stack.docker, { deploymentId: stack.config.deploymentId, minAgeMs: 0 });
    await stack?.stop();
  });

  async function startRun(
    seeded: SeededExperiment,
    caseCommand: string,
    overrides: Partial<RunSettings> = {},
  ) {
    const raw = buildPlatformMessage(seeded, {
      queue: 'direct',
      // The agent reaches the test's hit counter on the host, so its spec opens that port (issue 15).
      runtimeSpec: {
        agent_image: 'bench/busybox:latest',
        sandbox_start_command: 'sleep 3600',
        case_exec_command: caseCommand,
        allow_host_ports: [counter.port],
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
      overrides,
    );
    workflowIds.push(r.workflowId);
    return stack.client.workflow.getHandle(r.workflowId);
  }

  async function statuses(experimentId: number) {
    const { rows } = await stack.db.pool.query<{ id: number; status: string; error_message: string | null }>(
      'SELECT id, status, error_message FROM run_cases WHERE experiment_id = $1 ORDER BY id',
      [experimentId],
    );
    return rows;
  }

  const hitCommand = (sleep: number) =>
    `sleep ${sleep}; wget -q -O /dev/null http://host.docker.internal:${counter.port}/hit/{{run_case.run_case_id}}; echo '{"output":"done"}'`;

  test('kill -9 of the worker mid-run: after a restart every case finishes, each executed once unless its attempt was cut', async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: 20 });
    const first = spawnWorker(stack.env);
    const handle = await startRun(seeded, hitCommand(1));
    await eventually(
      async () =>
        (await statuses(seeded.experimentId)).filter((r) => r.status === 'success').length >= 4
          ? true
          : undefined,
      120_000,
      '4 cases done',
    );
    first.child.kill('SIGKILL');
    await first.exited;

    const second = spawnWorker(stack.env);
    try {
      const result = (await handle.result()) as ExperimentRunResult;
      assert.equal(result.outcome, 'completed');
      const rows = await statuses(seeded.experimentId);
      assert.deepEqual(
        rows.map((r) => r.status),
        Array(20).fill('success'),
        second.output().slice(-2000),
      );

      // Attempts of each container phase (`case-<id>/run`), from the history: only the container
      // phases cut by the kill — at most CONSUMER_CONCURRENT_CASES of them — ran a second time.
      // (Trajectory/finalize activities cut by the kill are retried too, but never re-run an agent.)
      const runAttempts = new Map<string, number>();
      const events = (await handle.fetchHistory()).events ?? [];
      for (const e of events) {
        if (e.activityTaskScheduledEventAttributes?.activityId?.endsWith('/run'))
          runAttempts.set(String(e.eventId), 1);
      }
      for (const e of events) {
        const started = e.activityTaskStartedEventAttributes;
        const key = String(started?.scheduledEventId);
        if (started && runAttempts.has(key)) runAttempts.set(key, started.attempt ?? 1);
      }
      assert.equal(runAttempts.size, 20, 'one container phase per case');
      const retried = [...runAttempts.values()].filter((a) => a > 1).length;
      assert.ok(retried >= 1 && retried <= 4, `container phases cut by the kill are retried (${retried})`);
      for (const id of seeded.runCaseIds) {
        const hits = counter.hits.get(String(id)) ?? 0;
        assert.ok(hits >= 1 && hits <= 2, `case ${id} executed ${hits} times`);
      }
      const executedTwice = seeded.runCaseIds.filter((id) => (counter.hits.get(String(id)) ?? 0) > 1).length;
      assert.ok(
        executedTwice <= retried,
        `only retried cases may have executed twice (${executedTwice} > ${retried})`,
      );
    } finally {
      second.child.kill('SIGTERM');
      await second.exited;
    }
  });

  test('cancel with cases in flight: containers gone within seconds, remaining rows canceled', async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: 6 });
    const worker = spawnWorker(stack.env);
    try {
      const handle = await startRun(seeded, 'sleep 300');
      await eventually(
        async () =>
          (await managedContainers(stack.docker, [handle.workflowId])).length >= 4 ? true : undefined,
        60_000,
        'containers running',
      );
      // On-call's view: each running container phase heartbeats the container it owns.
      const beats = await eventually(
        async () => {
          const pending = (await handle.describe()).raw.pendingActivities ?? [];
          const details = pending.flatMap((a) => {
            const payload = a.heartbeatDetails?.payloads?.[0];
            return a.activityId?.endsWith('/run') && payload
              ? [defaultPayloadConverter.fromPayload<{ containerId: string; phase: string }>(payload)]
              : [];
          });
          // Before its container has started a phase heartbeats `container_start` (no container id yet).
          return details.length >= 4 && details.every((d) => d.phase === 'case_exec') ? details : undefined;
        },
        30_000,
        'heartbeat details of the container phases',
      );
      const running = await managedContainers(stack.docker, [handle.workflowId]);
      for (const beat of beats) {
        assert.equal(beat.phase, 'case_exec');
        assert.ok(
          running.includes(beat.containerId),
          `heartbeat names a container of this run: ${beat.containerId}`,
        );
      }
      const canceledAt = Date.now();
      await handle.cancel();
      await eventually(
        async () =>
          (await managedContainers(stack.docker, [handle.workflowId])).length === 0 ? true : undefined,
        20_000,
        'containers removed',
      );
      const removeSeconds = (Date.now() - canceledAt) / 1000;
      assert.ok(removeSeconds < 10, `containers removed after ${removeSeconds}s`);
      await assert.rejects(handle.result(), /cancel/i);
      const rows = await statuses(seeded.experimentId);
      assert.deepEqual(
        rows.map((r) => r.status),
        Array(6).fill('canceled'),
      );
      const { rows: exp } = await stack.db.pool.query<{ queue_status: string }>(
        'SELECT queue_status FROM experiments WHERE id = $1',
        [seeded.experimentId],
      );
      assert.equal(exp[0]?.queue_status, 'manual_terminated');
    } finally {
      worker.child.kill('SIGTERM');
      await worker.exited;
    }
  });

  test("the platform's manual_terminated mid-run stops the run; canceled rows are never overwritten", async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: 8 });
    const worker = spawnWorker({ ...stack.env, CONSUMER_CONCURRENT_CASES: '2' });
    try {
      const handle = await startRun(seeded, hitCommand(2));
      await eventually(
        async () =>
          (await statuses(seeded.experimentId)).some((r) => r.status === 'success') ? true : undefined,
        60_000,
        'first case done',
      );
      // What the platform's terminateExperiment does (CONTRACT §3.2/§3.3).
      await stack.db.pool.query(
        `UPDATE experiments SET queue_status = 'manual_terminated', queue_message_id = NULL, finished_at = now() WHERE id = $1`,
        [seeded.experimentId],
      );
      const { rows: canceledByPlatform } = await stack.db.pool.query<{ id: number }>(
        `UPDATE run_cases SET status = 'canceled', error_message = 'manual terminated by user-7', finished_at = now()
          WHERE experiment_id = $1 AND status IN ('pending','queued','running','trajectory','scoring')
          RETURNING id`,
        [seeded.experimentId],
      );
      const result = (await handle.result()) as ExperimentRunResult;
      assert.equal(result.outcome, 'canceled');
      const rows = await statuses(seeded.experimentId);
      const canceled = rows.filter((r) => r.status === 'canceled');
      assert.ok(canceled.length >= 4, `most cases canceled: ${JSON.stringify(rows)}`);
      for (const r of canceled) assert.equal(r.error_message, 'manual terminated by user-7');
      // The rows the platform canceled — the in-flight ones among them, whose late results are the
      // risk — stay exactly as it left them.
      for (const { id } of canceledByPlatform)
        assert.deepEqual(
          rows.find((r) => r.id === id),
          { id, status: 'canceled', error_message: 'manual terminated by user-7' },
        );
      assert.deepEqual(
        rows.filter((r) => !['canceled', 'success'].includes(r.status)),
        [],
      );
      assert.deepEqual(await managedContainers(stack.docker, [handle.workflowId]), []);
    } finally {
      worker.child.kill('SIGTERM');
      await worker.exited;
    }
  });

  test('a long run continues as new with bounded history and is found by ExperimentId through the temporal CLI', async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: 12 });
    const worker = spawnWorker(stack.env);
    try {
      const handle = await startRun(seeded, `echo '{"output":"ok"}'`, { maxHistoryEvents: 40 });
      const result = (await handle.result()) as ExperimentRunResult;
      assert.equal(result.outcome, 'completed');
      assert.equal(result.progress.success, 12);
      assert.deepEqual(
        (await statuses(seeded.experimentId)).map((r) => r.status),
        Array(12).fill('success'),
      );

      const temporal = findTemporalBinary();
      assert.ok(temporal, 'the temporal CLI (scripts/setup installs it)');
      const { stdout } = await run(temporal, [
        'workflow',
        'list',
        '--address',
        stack.config.temporal.address,
        '--query',
        `ExperimentId='${seeded.experimentId}'`,
        '--output',
        'json',
      ]);
      const listed = JSON.parse(stdout) as Array<{ execution: { workflowId: string } }>;
      assert.ok(listed.length >= 2, `continued runs are listed: ${listed.length}`);
      assert.ok(listed.every((w) => w.execution.workflowId === handle.workflowId));
    } finally {
      worker.child.kill('SIGTERM');
      await worker.exited;
    }
  });
});
