import { randomBytes } from 'node:crypto';
import amqp from 'amqplib';
import type { Logger } from '../../src/logger';
import { startBridge, type StartRun } from '../../bridge/experiment-bridge';
import { deadLetterQueueName } from '../../bridge/dead-letter';
import { createRedis } from '../../bridge/redis-lock';
import { amqpUrl, requireBridgeSettings } from '../../src/config';
import { errorStackText } from '../../src/domain/errors';
import { startStack, type Stack } from '../../test/support/stack';

/**
 * What the pipeline benches publish into: a stack with its worker and a bridge consuming a queue of
 * the bench's own (so a bench never takes another run's messages), removed again by `stop`.
 */
export interface BenchIntake {
  stack: Stack;
  queue: string;
  stop(): Promise<void>;
}

export async function startBenchIntake(opts: {
  log: Logger;
  liveContainers: number;
  startRun: (stack: Stack) => StartRun;
  /** More worker settings (e.g. SANDBOX_WARM_POOL_SIZE). */
  env?: Record<string, string>;
}): Promise<BenchIntake> {
  const queue = `agentbench.bench.${randomBytes(4).toString('hex')}`;
  const stack = await startStack({
    log: opts.log,
    env: {
      RABBITMQ_EXPERIMENT_QUEUE: queue,
      DOCKER_MAX_LIVE_CONTAINERS: String(opts.liveContainers),
      ...opts.env,
    },
  });
  const settings = requireBridgeSettings(stack.config);
  const redis = createRedis(settings.redis);
  const bridge = await startBridge({
    amqpUrl: settings.amqpUrl,
    queue,
    prefetch: 16,
    redis,
    log: opts.log,
    startRun: opts.startRun(stack),
  });
  return {
    stack,
    queue,
    async stop() {
      await bridge.stop();
      redis.disconnect();
      const conn = await amqp.connect(amqpUrl(stack.config));
      const ch = await conn.createChannel();
      await ch.deleteQueue(queue);
      await ch.deleteQueue(deadLetterQueueName(queue));
      await conn.close();
      await stack.stop();
    },
  };
}

/** Runs a bench's main: exit 0 when it printed its numbers, 1 with the stack trace otherwise. */
export function runBench(main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${errorStackText(err)}\n`);
      process.exit(1);
    },
  );
}
