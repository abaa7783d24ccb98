import { createServer } from 'node:net';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MessageLocks,
  START_ATTEMPTS_HEADER,
  createRedis,
  deadLetterQueueName,
  processedKey,
  processingKey,
  startBridge,
} from '../../bridge';
import {
  REDIS,
  captureLogger,
  forceCloseConnections,
  platformMessage,
  pollUntil,
  publishLikePlatform,
  queueDepth,
  recordingStartRun,
  startFixture,
  withChannel,
} from './bridge-harness';

/** A port nothing listens on: bound by us, then released. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
  assert.ok(address && typeof address === 'object');
  return address.port;
}

describe('bridge: locks, failures and broker loss (real RabbitMQ + Redis)', () => {
  test('a processing lock held by the old consumer ("1") acks without starting', async () => {
    const { startRun, calls } = recordingStartRun();
    const fx = await startFixture({ startRun });
    try {
      const msg = platformMessage(fx.queue);
      fx.trackSuffix(msg.message_id);
      await fx.redis.set(processingKey(msg.message_id), '1', 'EX', 300);
      await publishLikePlatform(fx.queue, JSON.stringify(msg), msg.message_id);

      const dup = await pollUntil(
        'duplicate log',
        () => fx.logs.withCode('E_DUPLICATE_MESSAGE_PROCESSING')[0],
      );
      assert.equal(dup.key, processingKey(msg.message_id));
      await fx.bridge.stop();
      assert.equal(calls.length, 0);
      assert.equal(await queueDepth(fx.queue), 0);
      assert.equal(
        await fx.redis.get(processingKey(msg.message_id)),
        '1',
        "the old consumer's lock is left alone",
      );
    } finally {
      await fx.cleanup();
    }
  });

  test('a processing lock left by another agentbench bridge is taken over and the run started', async () => {
    const { startRun, calls } = recordingStartRun();
    const fx = await startFixture({
      startRun,
      locks: (redis, log) =>
        new MessageLocks(redis, { processingSeconds: 300, processedSeconds: 600 }, log, 'test-owner'),
    });
    try {
      const msg = platformMessage(fx.queue);
      fx.trackSuffix(msg.message_id);
      await fx.redis.set(processingKey(msg.message_id), 'agentbench:crashed-host:1:abcd', 'EX', 300);
      await publishLikePlatform(fx.queue, JSON.stringify(msg), msg.message_id);

      await pollUntil('start', () => fx.logs.withCode('WORKFLOW_STARTED')[0]);
      await fx.bridge.stop();
      assert.equal(calls.length, 1);
      assert.equal(await queueDepth(fx.queue), 0);
      assert.equal(await fx.redis.exists(processingKey(msg.message_id)), 0);
      const ttl = await fx.redis.ttl(processedKey(msg.message_id));
      assert.ok(ttl > 500 && ttl <= 600, `configured processed TTL is used, got ${ttl}`);
    } finally {
      await fx.cleanup();
    }
  });

  test('with Redis unreachable the message is still started and E_REDIS_DEGRADED is logged once', async () => {
    const { startRun, calls } = recordingStartRun();
    const deadRedis = createRedis({ ...REDIS, port: await closedPort() });
    const fx = await startFixture({ startRun, redis: deadRedis });
    try {
      const msg = platformMessage(fx.queue);
      await publishLikePlatform(fx.queue, JSON.stringify(msg), msg.message_id);

      await pollUntil('start', () => fx.logs.withCode('WORKFLOW_STARTED')[0]);
      await fx.bridge.stop();
      assert.equal(calls.length, 1);
      assert.equal(await queueDepth(fx.queue), 0);
      assert.equal(fx.logs.withCode('E_REDIS_DEGRADED').length, 1);
    } finally {
      await fx.cleanup();
    }
  });

  test('a start that fails twice is retried, then started once and acked', async () => {
    const { startRun, calls } = recordingStartRun((attempt) =>
      attempt <= 2 ? new Error('14 UNAVAILABLE: temporal frontend unreachable') : undefined,
    );
    const fx = await startFixture({ startRun, startRetry: { attempts: 5, initialDelayMs: 20 } });
    try {
      const msg = platformMessage(fx.queue);
      fx.trackSuffix(msg.message_id);
      await publishLikePlatform(fx.queue, JSON.stringify(msg), msg.message_id);

      await pollUntil('start', () => fx.logs.withCode('WORKFLOW_STARTED')[0]);
      await fx.bridge.stop();
      assert.equal(calls.length, 3);
      assert.equal(fx.logs.withCode('E_WORKFLOW_START_FAILED').length, 0);
      assert.equal(await queueDepth(fx.queue), 0);
      assert.equal(await fx.redis.get(processedKey(msg.message_id)), '1');
    } finally {
      await fx.cleanup();
    }
  });

  test('a start that keeps failing transiently is published again with a counted attempt, then dead-lettered', async () => {
    const { startRun, calls } = recordingStartRun(
      () => new Error('14 UNAVAILABLE: temporal frontend unreachable'),
    );
    const fx = await startFixture({
      startRun,
      startRetry: { attempts: 2, initialDelayMs: 20 },
      startMaxAttempts: 3,
    });
    try {
      const msg = platformMessage(fx.queue);
      fx.trackSuffix(msg.message_id);
      await publishLikePlatform(fx.queue, JSON.stringify(msg), msg.message_id);

      const deadLettered = await pollUntil('dead letter', () =>
        fx.logs.withCode('E_WORKFLOW_START_FAILED').find((l) => l.dead_letter_queue !== undefined),
      );
      assert.match(
        String(deadLettered.error),
        /^E_WORKFLOW_START_FAILED: 3 deliveries failed to start, the last with: 14 UNAVAILABLE/,
      );
      await fx.bridge.stop();

      const failed = fx.logs.withCode('E_WORKFLOW_START_FAILED').filter((l) => l.workflow_id !== undefined);
      assert.deepEqual(
        failed.map((l) => l.start_attempts),
        [1, 2],
        'each requeue counts one more delivery',
      );
      assert.equal(failed[0]?.workflow_id, `experiment-1-${msg.message_id}`);
      assert.equal(failed[0]?.attempts, 2, 'in-process tries per delivery');
      assert.deepEqual(
        fx.logs.withCode('MESSAGE_RECEIVED').map((l) => l.start_attempts),
        [0, 1, 2],
      );
      assert.equal(calls.length, 6, '3 deliveries × 2 tries, then no more');
      assert.equal(fx.bridge.stats().started, 0);
      assert.equal(await queueDepth(fx.queue), 0);
      const dead = await withChannel((ch) => ch.get(deadLetterQueueName(fx.queue), { noAck: true }));
      assert.ok(dead, 'the message is in the dead-letter queue');
      assert.equal(dead.properties.headers?.['x-agentbench-error-code'], 'E_WORKFLOW_START_FAILED');
      assert.equal(dead.properties.headers?.[START_ATTEMPTS_HEADER], 2);
      assert.equal(dead.properties.messageId, msg.message_id);
      assert.equal(dead.content.toString('utf8'), JSON.stringify(msg));
      assert.equal(await fx.redis.exists(processingKey(msg.message_id)), 0);
      assert.equal(await fx.redis.exists(processedKey(msg.message_id)), 0);
    } finally {
      await fx.cleanup();
    }
  });

  test('after the broker closes the connection the bridge reconnects and keeps consuming', async () => {
    const { startRun, calls } = recordingStartRun();
    const fx = await startFixture({ startRun, reconnect: { initialDelayMs: 100, maxDelayMs: 1000 } });
    try {
      assert.ok((await forceCloseConnections(fx.queue)) >= 1);
      await pollUntil('reconnect', () => fx.bridge.stats().reconnects >= 1);
      assert.ok(fx.logs.withCode('E_MQ_CONNECTION_LOST').length >= 1);

      const msg = platformMessage(fx.queue);
      fx.trackSuffix(msg.message_id);
      await publishLikePlatform(fx.queue, JSON.stringify(msg), msg.message_id);
      await pollUntil('start after reconnect', () => fx.logs.withCode('WORKFLOW_STARTED')[0]);
      await fx.bridge.stop();
      assert.equal(calls.length, 1);
      assert.equal(await queueDepth(fx.queue), 0);
    } finally {
      await fx.cleanup();
    }
  });

  test('a delivery whose ack is lost with the connection is redelivered and deduplicated', async () => {
    let openGate: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      openGate = resolve;
    });
    const { startRun: record, calls } = recordingStartRun();
    const fx = await startFixture({
      startRun: async (message, meta) => {
        const result = await record(message, meta);
        await gate;
        return result;
      },
      // Long enough that the gate opens before the redelivery arrives, so the redelivery meets
      // the processed key rather than a start still in progress.
      reconnect: { initialDelayMs: 1000, maxDelayMs: 1000 },
    });
    try {
      const msg = platformMessage(fx.queue);
      fx.trackSuffix(msg.message_id);
      await publishLikePlatform(fx.queue, JSON.stringify(msg), msg.message_id);
      await pollUntil('start in progress', () => calls.length === 1);

      assert.ok((await forceCloseConnections(fx.queue)) >= 1);
      await pollUntil('connection loss noticed', () => fx.logs.withCode('E_MQ_CONNECTION_LOST')[0]);
      openGate();

      await pollUntil('ack failure logged', () => fx.logs.withCode('E_ACK_FAILED')[0]);
      const dup = await pollUntil(
        'redelivery deduplicated',
        () => fx.logs.withCode('E_DUPLICATE_MESSAGE_PROCESSED')[0],
      );
      assert.equal(dup.key, processedKey(msg.message_id));
      await fx.bridge.stop();
      assert.equal(calls.length, 1);
      assert.equal(await queueDepth(fx.queue), 0);
    } finally {
      openGate();
      await fx.cleanup();
    }
  });

  test('an unreachable broker at startup is retried in the background and stop() ends it promptly', async () => {
    const logs = captureLogger();
    const { startRun } = recordingStartRun();
    const bridge = await startBridge({
      amqpUrl: `amqp://guest:guest@127.0.0.1:${await closedPort()}/%2F`,
      queue: 'agentbench.test.unreachable',
      prefetch: 1,
      redis: null,
      log: logs.log,
      startRun,
      reconnect: { initialDelayMs: 50, maxDelayMs: 200 },
    });
    await pollUntil('two failed attempts', () => logs.withCode('E_MQ_CONNECTION_LOST').length >= 2);
    await bridge.stop();
    assert.deepEqual(bridge.stats(), {
      received: 0,
      started: 0,
      duplicates: 0,
      deadLettered: 0,
      reconnects: 0,
    });
  });
});
