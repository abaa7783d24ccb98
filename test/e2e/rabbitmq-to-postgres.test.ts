import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import amqp from 'amqplib';
import { amqpUrl, requireBridgeSettings } from '../../src/config';
import { startBridge, type BridgeHandle } from '../../bridge/experiment-bridge';
import { createRedis, MessageLocks } from '../../bridge/redis-lock';
import { deadLetterQueueName } from '../../bridge/dead-letter';
import { startExperimentRun } from '../../src/temporal/run-starter';
import { seedExperiment } from '../support/database';
import { buildPlatformMessage, publishAsPlatform, publishRaw } from '../support/platform';
import { captureLogger, eventually, managedContainers, startStack, type Stack } from '../support/stack';

/**
 * The whole chain for real: a message published as the platform publishes it → RabbitMQ → bridge
 * → Temporal dev server → worker → Docker container → Postgres rows the platform reads.
 */
describe('RabbitMQ → Temporal → Docker → Postgres', () => {
  const queue = `agentbench.e2e.${randomBytes(4).toString('hex')}`;
  const { log, lines } = captureLogger('info');
  let stack: Stack;
  let bridge: BridgeHandle;
  let redis: ReturnType<typeof createRedis>;
  const workflowIds = new Set<string>();

  before(async () => {
    stack = await startStack({
      env: { RABBITMQ_EXPERIMENT_QUEUE: queue, CONSUMER_CONCURRENT_CASES: '2' },
      log,
    });
    const settings = requireBridgeSettings(stack.config);
    redis = createRedis(settings.redis);
    bridge = await startBridge({
      amqpUrl: settings.amqpUrl,
      queue,
      prefetch: stack.config.rabbitmq.prefetch,
      redis,
      locks: new MessageLocks(redis, { processingSeconds: 300, processedSeconds: 86400 }, log, 'e2e'),
      log,
      startRun: async (message, meta) => {
        const r = await startExperimentRun(
          { client: stack.client, pool: stack.db.pool, config: stack.config, log },
          message,
          meta.dedupSuffix,
        );
        workflowIds.add(r.workflowId);
        return r;
      },
    });
  });

  after(async () => {
    await bridge?.stop();
    redis?.disconnect();
    const conn = await amqp.connect(amqpUrl(stack.config));
    const ch = await conn.createChannel();
    await ch.deleteQueue(queue);
    await ch.deleteQueue(deadLetterQueueName(queue));
    await conn.close();
    assert.deepEqual(
      await managedContainers(stack.docker, [...workflowIds]),
      [],
      'no container of ours is left',
    );
    await stack?.stop();
  });

  async function experimentDone(experimentId: number) {
    return eventually(
      async () => {
        const { rows } = await stack.db.pool.query<{
          queue_status: string;
          started_at: Date | null;
          finished_at: Date | null;
        }>('SELECT queue_status, started_at, finished_at FROM experiments WHERE id = $1', [experimentId]);
        const row = rows[0];
        return row && ['done', 'failed'].includes(row.queue_status) ? row : undefined;
      },
      180_000,
      `experiment ${experimentId} to finish`,
    );
  }

  async function caseRows(experimentId: number) {
    const { rows } = await stack.db.pool.query<{
      id: number;
      status: string;
      agent_output: unknown;
      logs: string | null;
      latency_ms: number | null;
      started_at: Date | null;
      finished_at: Date | null;
      error_message: string | null;
      runtime_snapshot_json: Record<string, unknown>;
      agent_trajectory: unknown;
    }>('SELECT * FROM run_cases WHERE experiment_id = $1 ORDER BY id', [experimentId]);
    return rows;
  }

  /** How many times each case's container phase was scheduled, from the workflow history. */
  async function containerPhaseRuns(workflowId: string): Promise<Map<string, number>> {
    const history = await stack.client.workflow.getHandle(workflowId).fetchHistory();
    const counts = new Map<string, number>();
    for (const e of history.events ?? []) {
      const id = e.activityTaskScheduledEventAttributes?.activityId;
      if (id?.endsWith('/run')) counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    return counts;
  }

  /** Activity ids of every case phase scheduled in a run, in order. */
  async function casePhases(workflowId: string): Promise<string[]> {
    const history = await stack.client.workflow.getHandle(workflowId).fetchHistory();
    return (history.events ?? []).flatMap((e) => {
      const id = e.activityTaskScheduledEventAttributes?.activityId;
      return id?.startsWith('case-') ? [id] : [];
    });
  }

  test('the platform example message runs every case in a real container and leaves the rows success', async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: 3 });
    const message = buildPlatformMessage(seeded, {
      queue,
      runtimeSpec: {
        agent_image: 'bench/agent-base:bookworm',
        pull_policy: 'if-not-present',
        runtime_type: 'agno_docker',
        sandbox_start_command: 'sleep infinity',
        case_exec_command: `python3 -c "import json,os;print(json.dumps({'output':'4','echo':os.environ['BENCHMARK_USER_INPUT']}))"`,
      },
    });
    await publishAsPlatform(amqpUrl(stack.config), queue, message, stack.db.pool);

    const experiment = await experimentDone(seeded.experimentId);
    assert.equal(experiment.queue_status, 'done');
    assert.ok(experiment.started_at, 'experiment started_at set');
    assert.ok(experiment.finished_at, 'experiment finished_at set');

    const rows = await caseRows(seeded.experimentId);
    assert.equal(rows.length, 3);
    for (const row of rows) {
      assert.equal(row.status, 'success', `case ${row.id}: ${row.error_message}`);
      assert.equal(row.agent_output, '4');
      assert.ok(row.logs?.includes('"output": "4"'), `stdout captured in logs: ${row.logs}`);
      assert.ok(row.logs?.includes(`[agentbench] workflow_id=`), 'footer names the run');
      assert.ok((row.latency_ms ?? 0) > 0, 'latency recorded');
      assert.ok(row.started_at && row.finished_at && row.finished_at >= row.started_at);
      assert.equal(row.error_message, null);
      assert.equal(typeof row.runtime_snapshot_json.runtime_spec_hash, 'string');
      assert.deepEqual(row.agent_trajectory, [], 'no OTel data and no stdout trajectory → []');
    }
    // The user input (quotes, $(...), backticks) reached the agent intact through the env channel.
    const logs = rows[0]?.logs ?? '';
    assert.ok(logs.includes('$(echo pwned)') && logs.includes('`id`'), logs);
    assert.ok(lines.some((l) => l.code === 'MESSAGE_RECEIVED'));
    assert.ok(lines.some((l) => l.code === 'CASE_COMPLETED'));
    // Nothing to judge and telemetry complete: each container phase finished its case itself.
    const [workflowId] = [...workflowIds].filter((id) => id.startsWith(`experiment-${seeded.experimentId}-`));
    assert.deepEqual((await casePhases(workflowId!)).sort(), rows.map((r) => `case-${r.id}/run`).sort());
  });

  /**
   * One single-case run whose first UPDATE moving the case to `status` fails (a trigger; its
   * sequence is not rolled back with the error). The case still succeeds, with the agent run once;
   * returns what a test needs to check how it got there.
   */
  async function runWithFirstMoveFailing(
    status: string,
    output: string,
  ): Promise<{ caseId: number; workflowId: string }> {
    const seeded = await seedExperiment(stack.db.pool, { cases: 1 });
    const caseId = seeded.runCaseIds[0]!;
    const name = `e2e_fail_once_${caseId}`;
    await stack.db.pool.query(`
      CREATE SEQUENCE ${name};
      CREATE FUNCTION ${name}() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF nextval('${name}') = 1 THEN RAISE EXCEPTION 'injected: first move to ${status} fails'; END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER ${name} BEFORE UPDATE ON run_cases FOR EACH ROW
        WHEN (NEW.id = ${caseId} AND NEW.status = '${status}') EXECUTE FUNCTION ${name}();`);
    try {
      const message = buildPlatformMessage(seeded, {
        queue,
        runtimeSpec: {
          agent_image: 'bench/busybox:latest',
          sandbox_start_command: 'sleep infinity',
          case_exec_command: `echo '{"output":"${output}"}'`,
        },
      });
      await publishAsPlatform(amqpUrl(stack.config), queue, message, stack.db.pool);
      assert.equal((await experimentDone(seeded.experimentId)).queue_status, 'done');
      const rows = await caseRows(seeded.experimentId);
      assert.deepEqual(
        rows.map((r) => [r.status, r.agent_output]),
        [['success', output]],
      );
      assert.ok(lines.some((l) => l.code === 'CASE_INLINE_FINALIZE_FAILED' && l.run_case_id === caseId));
      const [workflowId] = [...workflowIds].filter((id) =>
        id.startsWith(`experiment-${seeded.experimentId}-`),
      );
      return { caseId, workflowId: workflowId! };
    } finally {
      await stack.db.pool.query(
        `DROP TRIGGER ${name} ON run_cases; DROP FUNCTION ${name}(); DROP SEQUENCE ${name};`,
      );
    }
  }

  test('when finishing a case in the container phase fails, trajectory and finalize run as activities; the agent runs once', async () => {
    const { caseId, workflowId } = await runWithFirstMoveFailing('success', 'once');
    assert.deepEqual(await casePhases(workflowId), [
      `case-${caseId}/run`,
      `case-${caseId}/trajectory`,
      `case-${caseId}/finalize`,
    ]);
  });

  test('when collecting the trajectory before storing the record fails, the record is stored anyway and the case still finishes inline', async () => {
    const { caseId, workflowId } = await runWithFirstMoveFailing('trajectory', 'kept');
    // One container phase, which stored the record, then collected the trajectory and finished the case.
    assert.deepEqual(await casePhases(workflowId), [`case-${caseId}/run`]);
    const { rows: stored } = await stack.db.pool.query<{ output: unknown; source: string | null }>(
      `SELECT result->'agentOutput' AS output, trajectory->>'source' AS source
         FROM agentbench_case_results WHERE run_case_id = $1`,
      [caseId],
    );
    assert.deepEqual(stored, [{ output: 'kept', source: 'none' }]);
  });

  test('a case that exits non-zero fails alone; no other case re-executes', async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: 3 });
    const failing = seeded.runCaseIds[1];
    const message = buildPlatformMessage(seeded, {
      queue,
      runtimeSpec: {
        agent_image: 'bench/busybox:latest',
        sandbox_start_command: 'sleep 3600',
        case_exec_command: `if [ "{{run_case.run_case_id}}" = "${failing}" ]; then echo boom >&2; exit 3; fi; echo '{"output":"ok"}'`,
      },
    });
    await publishAsPlatform(amqpUrl(stack.config), queue, message, stack.db.pool);
    const experiment = await experimentDone(seeded.experimentId);
    assert.equal(experiment.queue_status, 'done', 'one success and one failure → done (§3.4)');

    const rows = await caseRows(seeded.experimentId);
    for (const row of rows) {
      if (row.id === failing) {
        assert.equal(row.status, 'failed');
        assert.equal(row.error_message, 'E_AGENT_EXIT_NON_ZERO: exit code 3');
        assert.ok(row.logs?.includes('boom'));
      } else {
        assert.equal(row.status, 'success');
        assert.equal(row.agent_output, 'ok');
      }
    }
    const workflowId = `experiment-${seeded.experimentId}-${String(message.message_id)}`;
    const runs = await containerPhaseRuns(workflowId);
    assert.equal(runs.size, 3);
    for (const [id, n] of runs) assert.equal(n, 1, `${id} scheduled once`);
  });

  test('the same message published twice starts one workflow and runs each case once', async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: 2 });
    const message = buildPlatformMessage(seeded, {
      queue,
      runtimeSpec: {
        agent_image: 'bench/busybox:latest',
        sandbox_start_command: 'sleep 3600',
        case_exec_command: `echo '{"output":"once"}'`,
      },
    });
    await publishAsPlatform(amqpUrl(stack.config), queue, message, stack.db.pool);
    await publishAsPlatform(amqpUrl(stack.config), queue, message);
    await experimentDone(seeded.experimentId);
    await eventually(
      async () => (bridge.stats().received >= 2 ? true : undefined),
      30_000,
      'both deliveries',
    );

    const list = stack.client.workflow.list({ query: `ExperimentId = '${seeded.experimentId}'` });
    const found: string[] = [];
    for await (const wf of list) found.push(wf.workflowId);
    assert.equal(found.length, 1, `one workflow for the experiment, got ${found.join(', ')}`);
    const runs = await containerPhaseRuns(found[0] ?? '');
    assert.deepEqual([...runs.values()], [1, 1]);
  });

  test('malformed messages go to the dead-letter queue with their code and the bridge keeps consuming', async () => {
    const bad = [
      ['not json {', 'E_MESSAGE_INVALID_JSON'],
      [JSON.stringify({ message_type: 'other.type', schema_version: 'v2' }), 'E_UNSUPPORTED_MESSAGE_TYPE'],
      [
        JSON.stringify({ message_type: 'experiment.run.requested', schema_version: 'v3' }),
        'E_UNSUPPORTED_SCHEMA_VERSION',
      ],
      [
        JSON.stringify({
          message_type: 'experiment.run.requested',
          schema_version: 'v2',
          dataset: { id: 1, name: 'x' },
        }),
        'E_MESSAGE_SCHEMA_INVALID',
      ],
    ] as const;
    for (const [body] of bad) await publishRaw(amqpUrl(stack.config), queue, body);

    const seeded = await seedExperiment(stack.db.pool, { cases: 1 });
    const good = buildPlatformMessage(seeded, {
      queue,
      runtimeSpec: {
        agent_image: 'bench/busybox:latest',
        sandbox_start_command: 'sleep 3600',
        case_exec_command: `echo '{"output":"after-bad"}'`,
      },
    });
    await publishAsPlatform(amqpUrl(stack.config), queue, good, stack.db.pool);
    await experimentDone(seeded.experimentId);
    assert.equal((await caseRows(seeded.experimentId))[0]?.agent_output, 'after-bad');

    const conn = await amqp.connect(amqpUrl(stack.config));
    try {
      const ch = await conn.createChannel();
      const codes: string[] = [];
      for (;;) {
        const m = await ch.get(deadLetterQueueName(queue), { noAck: true });
        if (!m) break;
        codes.push(String(m.properties.headers?.['x-agentbench-error-code']));
      }
      assert.deepEqual(
        codes,
        bad.map(([, code]) => code),
      );
    } finally {
      await conn.close();
    }
  });
});
