import type { ConfirmChannel, ConsumeMessage } from 'amqplib';
import { copiedProperties } from './dead-letter';

/**
 * How many deliveries of this message have had a transiently failing workflow start. RabbitMQ's
 * nack-requeue cannot carry a count (headers stay as published, `redelivered` is a mere flag), so
 * such a message is published again, with this header incremented, and the delivery acked; past
 * BRIDGE_START_MAX_ATTEMPTS it is dead-lettered instead. Published again at the tail, it also stops
 * holding a prefetch slot ahead of the messages behind it.
 */
export const START_ATTEMPTS_HEADER = 'x-agentbench-start-attempts';

export function startAttemptsOf(msg: ConsumeMessage): number {
  const raw: unknown = msg.properties.headers?.[START_ATTEMPTS_HEADER];
  const n = typeof raw === 'number' ? raw : typeof raw === 'string' ? Number(raw) : NaN;
  return Number.isSafeInteger(n) && n > 0 ? n : 0;
}

/** Publishes the original body to `queue` again with `attempts` in the header; resolves on the broker confirm. */
export function republishWithStartAttempts(
  channel: ConfirmChannel,
  queue: string,
  msg: ConsumeMessage,
  attempts: number,
): Promise<void> {
  return new Promise((resolve, reject) => {
    channel.sendToQueue(
      queue,
      msg.content,
      copiedProperties(msg, { [START_ATTEMPTS_HEADER]: attempts }),
      (err: unknown) => {
        if (err) reject(err instanceof Error ? err : new Error(`republish not confirmed: ${String(err)}`));
        else resolve();
      },
    );
  });
}
