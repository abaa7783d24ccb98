import type { Channel, ConfirmChannel, ConsumeMessage, Options } from 'amqplib';

/**
 * Poison messages go to `<queue>.dead-letter` with the reason in headers, then the original is
 * acked (ARCHITECTURE §5.3): never dropped silently (the Python consumer's nack without a DLX
 * discarded them, §13.4), never requeued forever. The platform's queue keeps its exact
 * declaration (no x-dead-letter-exchange, §1.1), so we publish the copy ourselves.
 */

export interface DeadLetterReason {
  code: string;
  error: string;
}

const MAX_ERROR_HEADER_CHARS = 1000;

export function deadLetterQueueName(queue: string): string {
  return `${queue}.dead-letter`;
}

/** Our own queue: durable so poison messages survive a broker restart; no arguments. */
export async function assertDeadLetterQueue(channel: Channel, queue: string): Promise<string> {
  const name = deadLetterQueueName(queue);
  await channel.assertQueue(name, { durable: true });
  return name;
}

function deadLetterProperties(queue: string, msg: ConsumeMessage, reason: DeadLetterReason): Options.Publish {
  return copiedProperties(msg, {
    'x-agentbench-error-code': reason.code,
    'x-agentbench-error': reason.error.slice(0, MAX_ERROR_HEADER_CHARS),
    'x-agentbench-original-queue': queue,
    'x-agentbench-dead-lettered-at': new Date().toISOString(),
  });
}

/** The delivery's properties for a persistent copy of it, with `headers` added to its own. */
export function copiedProperties(msg: ConsumeMessage, headers: Record<string, unknown>): Options.Publish {
  const p = msg.properties;
  // userId is left out on purpose: RabbitMQ rejects a user-id that is not ours. expiration too:
  // a dead letter must stay until someone looks at it, and a retried message until it is started.
  const options: Options.Publish = { persistent: true, headers: { ...(p.headers ?? {}), ...headers } };
  if (p.contentType !== undefined) options.contentType = String(p.contentType);
  if (p.contentEncoding !== undefined) options.contentEncoding = String(p.contentEncoding);
  if (p.messageId !== undefined) options.messageId = String(p.messageId);
  if (p.correlationId !== undefined) options.correlationId = String(p.correlationId);
  if (p.replyTo !== undefined) options.replyTo = String(p.replyTo);
  if (p.type !== undefined) options.type = String(p.type);
  if (p.appId !== undefined) options.appId = String(p.appId);
  if (typeof p.timestamp === 'number') options.timestamp = p.timestamp;
  if (typeof p.priority === 'number') options.priority = p.priority;
  return options;
}

/** Publishes the original body bytes to the dead-letter queue and resolves on the broker confirm. */
export function publishDeadLetter(
  channel: ConfirmChannel,
  queue: string,
  msg: ConsumeMessage,
  reason: DeadLetterReason,
): Promise<void> {
  return new Promise((resolve, reject) => {
    channel.sendToQueue(
      deadLetterQueueName(queue),
      msg.content,
      deadLetterProperties(queue, msg, reason),
      (err: unknown) => {
        if (err)
          reject(err instanceof Error ? err : new Error(`dead-letter publish not confirmed: ${String(err)}`));
        else resolve();
      },
    );
  });
}
