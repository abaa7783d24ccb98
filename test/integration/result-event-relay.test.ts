import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { amqpUrl, loadConfig } from '../../src/config';
import { createLogger } from '../../src/logger';
import { countPendingEvents } from '../../src/db/result-event-outbox';
import { persistCaseResult } from '../../src/db/run-case-repository';
import { createMetricsRegistry, ResultEventMetrics } from '../../src/metrics/orchestrator-metrics';
import { ResultEventRelay } from '../../src/result-events/result-event-relay';
import { createTestDatabase, setCaseStatuses, type TestDatabase } from '../support/database';
import { seedStoredRun } from '../support/platform';
import { parseExposition } from '../support/prometheus-text';
import { assertValidResultEvent, bindResultQueue, type ReceivedResultEvent } from '../support/result-events';
import { eventually, localTestEnv } from '../support/stack';

const log = createLogger({ level: 'silent' });

describe('result event relay (shared RabbitMQ)', () => {
  let db: TestDatabase;
  const tag = randomBytes(4).toString('hex');
  const exchange = `agentbench.results.test-${tag}`;
  const url = amqpUrl(loadConfig(localTestEnv()));
  let queue: Awaited<ReturnType<typeof bindResultQueue>>;
  before(async () => {
    db = await createTestDatabase();
    queue = await bindResultQueue(url, exchange, `agentbench-test-results-${tag}`);
  });
  after(async () => {
    await queue?.delete();
    await db?.drop();
  });

  test('publishes each outbox event once to the topic exchange: persistent, message id = event_id, valid under contracts/', async () => {
    const { seeded, workflowId } = await seedStoredRun(db.pool, 2);
    await setCaseStatuses(db.pool, seeded.runCaseIds, 'running');
    const [a, b] = seeded.runCaseIds as [number, number];
    const row = (runCaseId: number, status: 'success' | 'failed', errorMessage: string | null) => ({
      runCaseId,
      experimentId: seeded.experimentId,
      status,
      agentTrajectory: [],
      agentOutput: 'ok',
      latencyMs: 5,
      logs: '',
      errorMessage,
      runtimeSnapshot: {},
      inspectEvalId: workflowId,
      inspectSampleId: String(runCaseId),
      usage: {},
      scores: [{ scorerKey: 'task_success', evaluatorId: 0, score: -1, reason: 'no judge', rawResult: {} }],
    });
    await persistCaseResult(db.pool, row(a, 'success', null), { workflowId });
    await persistCaseResult(db.pool, row(b, 'failed', 'E_AGENT_EXIT_NON_ZERO: exit code 2'), { workflowId });

    const registry = createMetricsRegistry({ defaultMetrics: false });
    const relay = new ResultEventRelay({
      pool: db.pool,
      amqpUrl: url,
      exchange,
      deploymentId: 'test-deployment',
      log,
      retentionDays: 7,
      idleMs: 50,
      metrics: new ResultEventMetrics(registry),
    });
    relay.start();
    const got: ReceivedResultEvent[] = [];
    try {
      await eventually(
        async () => {
          got.push(...(await queue.drain()));
          return got.length >= 3 ? true : undefined;
        },
        30_000,
        'three result events',
      );
      const metrics = parseExposition(await registry.metrics());
      assert.equal(
        metrics.value('agentbench_result_events_published_total', { type: 'run_case.finished' }),
        2,
      );
      assert.equal(
        metrics.value('agentbench_result_events_published_total', { type: 'experiment_run.finished' }),
        1,
      );
      assert.equal(metrics.value('agentbench_result_events_relay_connected'), 1);
      assert.equal(metrics.value('agentbench_result_events_pending'), 0);
    } finally {
      await relay.stop();
    }

    assert.equal(got.length, 3);
    assert.equal(await countPendingEvents(db.pool), 0);
    assert.deepEqual(got.map((g) => g.routingKey).sort(), [
      'experiment_run.finished',
      'run_case.finished',
      'run_case.finished',
    ]);
    const { rows } = await db.pool.query<{ event_id: string }>(
      'SELECT event_id::text FROM agentbench_result_events WHERE experiment_id = $1 ORDER BY seq',
      [seeded.experimentId],
    );
    assert.deepEqual(got.map((g) => g.body.event_id).sort(), rows.map((r) => r.event_id).sort());
    for (const g of got) {
      assertValidResultEvent(g.body);
      assert.equal(g.persistent, true);
      assert.equal(g.messageId, g.body.event_id);
      assert.equal(g.body.message_type, g.routingKey);
      assert.deepEqual(g.body.source, {
        service: 'agentbench-orchestrator',
        deployment_id: 'test-deployment',
      });
    }
    const failed = got.find((g) => (g.body.run_case as { id?: number } | undefined)?.id === b)?.body;
    assert.equal((failed?.run_case as { error_code: string }).error_code, 'E_AGENT_EXIT_NON_ZERO');
    const run = got.find((g) => g.routingKey === 'experiment_run.finished')?.body.run as {
      id: string;
      status: string;
    };
    assert.equal(run.id, workflowId);
    assert.equal(run.status, 'done');
  });
});
