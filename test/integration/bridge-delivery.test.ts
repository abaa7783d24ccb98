import { createHash, randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { GetMessage } from 'amqplib';
import { deadLetterQueueName, processedKey, processingKey } from '../../bridge';
import {
  platformMessage,
  pollUntil,
  publishLikePlatform,
  queueDepth,
  recordingStartRun,
  startFixture,
  withChannel,
} from './bridge-harness';

describe('bridge: deliveries from the platform queue (real RabbitMQ + Redis)', () => {
  test('starts one run per platform-published message, acks it and marks it processed in Redis', async () => {
    const { startRun, calls } = recordingStartRun();
    const fx = await startFixture({ startRun });
    try {
      const msg = platformMessage(fx.queue);
      fx.trackSuffix(msg.message_id);
      await publishLikePlatform(fx.queue, JSON.stringify(msg), msg.message_id);

      await pollUntil('WORKFLOW_STARTED', () => fx.logs.withCode('WORKFLOW_STARTED')[0]);
      await fx.bridge.waitForIdle();

      assert.equal(calls.length, 1);
      const [call] = calls;
      assert.ok(call);
      assert.equal(call.message.experiment.id, 1);
      assert.equal(call.message.dataset.id, 1);
      assert.deepEqual(
        call.message.run_cases.map((c) => c.run_case_id),
        [1, 2, 3],
      );
      assert.deepEqual(call.meta, {
        workflowId: `experiment-1-${msg.message_id}`,
        dedupSuffix: msg.message_id,
      });

      const [received] = fx.logs.withCode('MESSAGE_RECEIVED');
      assert.ok(received);
      assert.equal(received.message_id, msg.message_id);
      assert.equal(received.experiment_id, 1);
      assert.equal(received.run_cases, 3);
      assert.equal(fx.logs.withCode('WORKFLOW_STARTED')[0]?.workflow_id, `experiment-1-${msg.message_id}`);
      assert.ok(
        !JSON.stringify(fx.logs.lines).includes('sk-interop-SECRET-123'),
        'the evaluator api_key must not be logged',
      );

      assert.equal(await fx.redis.get(processedKey(msg.message_id)), '1');
      const ttl = await fx.redis.ttl(processedKey(msg.message_id));
      assert.ok(ttl > 86_300 && ttl <= 86_400, `processed TTL ${ttl}`);
      assert.equal(await fx.redis.exists(processingKey(msg.message_id)), 0);

      await fx.bridge.stop();
      // Stopping returns unacked deliveries to the queue, so an empty queue proves the ack.
      assert.equal(await queueDepth(fx.queue), 0);
      assert.deepEqual(fx.bridge.stats(), {
        received: 1,
        started: 1,
        duplicates: 0,
        deadLettered: 0,
        reconnects: 0,
      });
    } finally {
      await fx.cleanup();
    }
  });

  test('a re-published message is acked as E_DUPLICATE_MESSAGE_PROCESSED without a second start', async () => {
    const { startRun, calls } = recordingStartRun();
    const fx = await startFixture({ startRun });
    try {
      const msg = platformMessage(fx.queue);
      fx.trackSuffix(msg.message_id);
      const body = JSON.stringify(msg);
      await publishLikePlatform(fx.queue, body, msg.message_id);
      await pollUntil('first start', () => fx.logs.withCode('WORKFLOW_STARTED')[0]);
      await publishLikePlatform(fx.queue, body, msg.message_id);

      const duplicate = await pollUntil(
        'duplicate log',
        () => fx.logs.withCode('E_DUPLICATE_MESSAGE_PROCESSED')[0],
      );
      assert.equal(duplicate.key, processedKey(msg.message_id));
      await fx.bridge.stop();
      assert.equal(calls.length, 1);
      assert.equal(await queueDepth(fx.queue), 0);
      assert.deepEqual(fx.bridge.stats(), {
        received: 2,
        started: 1,
        duplicates: 1,
        deadLettered: 0,
        reconnects: 0,
      });
    } finally {
      await fx.cleanup();
    }
  });

  test('without Redis the workflow id deduplicates: the second start reports E_DUPLICATE_WORKFLOW', async () => {
    const { startRun, calls } = recordingStartRun();
    const fx = await startFixture({ startRun, redis: null });
    try {
      const msg = platformMessage(fx.queue);
      const body = JSON.stringify(msg);
      await publishLikePlatform(fx.queue, body, msg.message_id);
      await pollUntil('first start', () => fx.logs.withCode('WORKFLOW_STARTED')[0]);
      await publishLikePlatform(fx.queue, body, msg.message_id);

      const duplicate = await pollUntil(
        'duplicate workflow',
        () => fx.logs.withCode('E_DUPLICATE_WORKFLOW')[0],
      );
      assert.equal(duplicate.workflow_id, `experiment-1-${msg.message_id}`);
      await fx.bridge.stop();
      assert.equal(calls.length, 2);
      assert.equal(await queueDepth(fx.queue), 0);
      assert.deepEqual(fx.bridge.stats(), {
        received: 2,
        started: 1,
        duplicates: 1,
        deadLettered: 0,
        reconnects: 0,
      });
    } finally {
      await fx.cleanup();
    }
  });

  test('a message without message_id is keyed by the sha256 of its raw body', async () => {
    const { startRun, calls } = recordingStartRun();
    const fx = await startFixture({ startRun });
    try {
      const { message_id: _dropped, ...withoutId } = platformMessage(fx.queue);
      const body = Buffer.from(JSON.stringify(withoutId), 'utf8');
      const sha = createHash('sha256').update(body).digest('hex');
      fx.trackSuffix(sha);
      await publishLikePlatform(fx.queue, body);

      await pollUntil('start', () => calls[0]);
      await fx.bridge.waitForIdle();
      assert.deepEqual(calls[0]?.meta, { workflowId: `experiment-1-${sha}`, dedupSuffix: sha });
      assert.equal(await fx.redis.get(processedKey(sha)), '1');
    } finally {
      await fx.cleanup();
    }
  });

  test('malformed messages go to <queue>.dead-letter with their error code and original body; later messages still run', async () => {
    const { startRun, calls } = recordingStartRun();
    const fx = await startFixture({ startRun });
    try {
      const base = platformMessage(fx.queue);
      const withoutExperiment: Record<string, unknown> = { ...base, message_id: randomUUID() };
      delete withoutExperiment.experiment;
      const poison: Array<{ id: string; body: string; code: string }> = [
        {
          id: randomUUID(),
          body: '{"message_type": "experiment.run.requested", oops',
          code: 'E_MESSAGE_INVALID_JSON',
        },
        {
          id: randomUUID(),
          body: JSON.stringify({ ...base, message_id: randomUUID(), message_type: 'experiment.deleted' }),
          code: 'E_UNSUPPORTED_MESSAGE_TYPE',
        },
        {
          id: randomUUID(),
          body: JSON.stringify({ ...base, message_id: randomUUID(), schema_version: 'v3' }),
          code: 'E_UNSUPPORTED_SCHEMA_VERSION',
        },
        { id: randomUUID(), body: JSON.stringify(withoutExperiment), code: 'E_MESSAGE_SCHEMA_INVALID' },
      ];
      for (const p of poison) await publishLikePlatform(fx.queue, p.body, p.id);
      const good = platformMessage(fx.queue);
      fx.trackSuffix(good.message_id);
      await publishLikePlatform(fx.queue, JSON.stringify(good), good.message_id);

      await pollUntil('good message started', () => fx.logs.withCode('WORKFLOW_STARTED')[0]);
      await pollUntil('all dead-lettered', () => fx.bridge.stats().deadLettered === poison.length);
      await fx.bridge.stop();
      assert.equal(calls.length, 1);
      assert.equal(calls[0]?.meta.dedupSuffix, good.message_id);
      assert.equal(await queueDepth(fx.queue), 0);

      const dlq = deadLetterQueueName(fx.queue);
      assert.equal(dlq, `${fx.queue}.dead-letter`);
      const deadLetters = await withChannel(async (ch) => {
        const got: GetMessage[] = [];
        for (;;) {
          const m = await ch.get(dlq, { noAck: true });
          if (m === false) return got;
          got.push(m);
        }
      });
      assert.equal(deadLetters.length, poison.length);
      for (const p of poison) {
        const dl = deadLetters.find((m) => m.properties.messageId === p.id);
        assert.ok(dl, `dead letter for ${p.code}`);
        assert.equal(dl.content.toString('utf8'), p.body);
        assert.equal(dl.properties.contentType, 'application/json');
        assert.equal(dl.properties.deliveryMode, 2);
        const headers = dl.properties.headers ?? {};
        assert.equal(headers['x-agentbench-error-code'], p.code);
        assert.match(String(headers['x-agentbench-error']), new RegExp(`^${p.code}: `));
        assert.equal(headers['x-agentbench-original-queue'], fx.queue);
        const at = String(headers['x-agentbench-dead-lettered-at']);
        assert.equal(new Date(at).toISOString(), at);
        assert.equal(fx.logs.withCode(p.code).length, 1, `one ${p.code} log line`);
      }
    } finally {
      await fx.cleanup();
    }
  });

  test('the queue declaration stays compatible with the platform publisher (CONTRACT §1.1)', async () => {
    const { startRun } = recordingStartRun();
    const fx = await startFixture({ startRun });
    try {
      const reply = await withChannel((ch) => ch.assertQueue(fx.queue, { durable: true }));
      assert.equal(reply.queue, fx.queue);
      assert.equal(reply.consumerCount, 1);
      // The control: a different declaration is refused, so the success above means "identical".
      await assert.rejects(
        withChannel((ch) => ch.assertQueue(fx.queue, { durable: false })),
        /PRECONDITION_FAILED/,
      );
      await withChannel((ch) => ch.checkQueue(deadLetterQueueName(fx.queue)));
    } finally {
      await fx.cleanup();
    }
  });
});
