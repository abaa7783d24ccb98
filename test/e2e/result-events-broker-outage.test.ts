import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { ExperimentRunResult } from '../../src/domain/experiment-run';
import { parseExperimentMessage } from '../../src/domain/message';
import { countPendingEvents } from '../../src/db/result-event-outbox';
import { createLogger } from '../../src/logger';
import { createMetricsRegistry, ResultEventMetrics } from '../../src/metrics/orchestrator-metrics';
import { ResultEventRelay } from '../../src/result-events/result-event-relay';
import { startExperimentRun } from '../../src/temporal/run-starter';
import { seedExperiment } from '../support/database';
import { buildPlatformMessage } from '../support/platform';
import { startPrivateRabbitMq, type PrivateRabbitMq } from '../support/private-rabbitmq';
import { parseExposition } from '../support/prometheus-text';
import { assertValidResultEvent, bindResultQueue, type ReceivedResultEvent } from '../support/result-events';
import { eventually, startStack, type Stack } from '../support/stack';

const CASES = 6;

describe('result events across a real RabbitMQ outage (a private node, stopped and started)', () => {
  let broker: PrivateRabbitMq;
  let stack: Stack;
  before(async () => {
    broker = await startPrivateRabbitMq();
    // One case at a time, each ~1 s: the outage begins while the run still has cases to finish.
    stack = await startStack({ env: { CONSUMER_CONCURRENT_CASES: '1' } });
  });
  after(async () => {
    await stack?.stop();
    await broker?.destroy();
  });

  test('RabbitMQ stopped while a run finishes: no case fails, events arrive once it is back, none lost', async () => {
    const exchange = `agentbench.results.outage-${randomBytes(4).toString('hex')}`;
    const queue = await bindResultQueue(broker.url, exchange, 'outage-results');
    const registry = createMetricsRegistry({ defaultMetrics: false });
    const relay = new ResultEventRelay({
      pool: stack.db.pool,
      amqpUrl: broker.url,
      exchange,
      deploymentId: stack.config.deploymentId,
      log: createLogger({ level: 'silent' }),
      retentionDays: 7,
      idleMs: 50,
      reconnect: { initialDelayMs: 200, maxDelayMs: 1000 },
      metrics: new ResultEventMetrics(registry),
    });
    relay.start();
    const received: ReceivedResultEvent[] = [];
    try {
      const seeded = await seedExperiment(stack.db.pool, { cases: CASES });
      const parsed = parseExperimentMessage(
        JSON.stringify(
          buildPlatformMessage(seeded, {
            queue: 'direct',
            runtimeSpec: {
              agent_image: 'bench/busybox:latest',
              sandbox_start_command: 'sleep 3600',
              case_exec_command: `sleep 1; echo '{"output":"case {{run_case.run_case_id}}"}'`,
            },
          }),
        ),
      );
      assert.ok(parsed.ok);
      const { workflowId } = await startExperimentRun(
        {
          client: stack.client,
          pool: stack.db.pool,
          config: stack.config,
          log: createLogger({ level: 'silent' }),
        },
        parsed.message,
        parsed.message.message_id,
      );

      // The first case's event goes out while the broker is up…
      await eventually(
        async () => {
          received.push(...(await queue.drain()));
          return received.length > 0 ? true : undefined;
        },
        90_000,
        'the first result event',
      );
      // …then the broker goes away, for real, while the other cases are still running.
      await broker.stop();
      const result = (await stack.client.workflow.getHandle(workflowId).result()) as ExperimentRunResult;
      assert.equal(result.outcome, 'completed');
      assert.equal(result.progress.success, CASES, 'an outage of the broker never fails a case');
      const { rows: statuses } = await stack.db.pool.query<{ status: string }>(
        'SELECT status FROM run_cases WHERE experiment_id = $1',
        [seeded.experimentId],
      );
      assert.deepEqual(
        statuses.map((r) => r.status),
        Array(CASES).fill('success'),
      );
      const waiting = await countPendingEvents(stack.db.pool);
      assert.ok(waiting >= 2, `events wait in the outbox while the broker is down (${waiting})`);
      const metrics = parseExposition(await registry.metrics());
      assert.equal(metrics.value('agentbench_result_events_relay_connected'), 0);
      assert.ok(
        (metrics.value('agentbench_result_events_relay_failures_total', { side: 'broker' }) ?? 0) > 0,
      );
      assert.equal(metrics.value('agentbench_result_events_pending'), waiting);

      await broker.start();
      await queue.reconnect();
      const { rows: outbox } = await stack.db.pool.query<{ event_id: string; event_type: string }>(
        'SELECT event_id::text, event_type FROM agentbench_result_events WHERE experiment_id = $1',
        [seeded.experimentId],
      );
      assert.equal(outbox.length, CASES + 1, 'one event per case and one for the run, recorded');
      const expected = new Set(outbox.map((r) => r.event_id));
      await eventually(
        async () => {
          received.push(...(await queue.drain()));
          const ids = new Set(received.map((r) => r.body.event_id));
          return [...expected].every((id) => ids.has(id)) ? true : undefined;
        },
        60_000,
        'every event after the broker is back',
      );
      assert.equal(await countPendingEvents(stack.db.pool), 0);

      // None lost, nothing foreign; a duplicate (an event sent but not confirmed before the stop) is the same event.
      const byId = new Map<string, ReceivedResultEvent[]>();
      for (const r of received) byId.set(r.body.event_id, [...(byId.get(r.body.event_id) ?? []), r]);
      assert.deepEqual([...byId.keys()].sort(), [...expected].sort());
      for (const copies of byId.values()) {
        for (const c of copies) assert.deepEqual(c.body, copies[0]?.body);
        assertValidResultEvent(copies[0]?.body);
      }
      const types = [...byId.values()].map((c) => c[0]?.routingKey);
      assert.equal(types.filter((t) => t === 'run_case.finished').length, CASES);
      assert.equal(types.filter((t) => t === 'experiment_run.finished').length, 1);
    } finally {
      await relay.stop();
      await queue.delete();
    }
  });
});
