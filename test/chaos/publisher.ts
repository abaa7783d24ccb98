import amqp from 'amqplib';

export interface Publication {
  body: string;
  /** The AMQP message-id property, as the platform sets it to the body's message_id. */
  messageId?: string;
}

/**
 * Publishes like the platform (persistent, confirm channel) but as a producer that keeps going
 * through a broker restart: a publish that is not confirmed is sent again once the broker answers
 * (at-least-once, as any sane producer; the bridge's dedup absorbs the copies). `beforeEach(i)`
 * lets a scenario inject its fault at a given point of the intake.
 */
export async function publishAll(
  url: string,
  queue: string,
  messages: Publication[],
  opts: { beforeEach?: (index: number) => Promise<void>; deadlineMs?: number } = {},
): Promise<{ resent: number }> {
  const deadline = Date.now() + (opts.deadlineMs ?? 180_000);
  let conn: amqp.ChannelModel | null = null;
  let channel: amqp.ConfirmChannel | null = null;
  let resent = 0;
  const open = async () => {
    conn = await amqp.connect(url);
    conn.on('error', () => undefined);
    channel = await conn.createConfirmChannel();
    channel.on('error', () => undefined);
    await channel.assertQueue(queue, { durable: true });
    return channel;
  };
  try {
    for (let i = 0; i < messages.length; i += 1) {
      await opts.beforeEach?.(i);
      const m = messages[i];
      if (!m) continue;
      for (let attempt = 0; ; attempt += 1) {
        try {
          const ch = channel ?? (await open());
          ch.sendToQueue(queue, Buffer.from(m.body), {
            persistent: true,
            contentType: 'application/json',
            ...(m.messageId ? { messageId: m.messageId } : {}),
          });
          await ch.waitForConfirms();
          if (attempt > 0) resent += 1;
          break;
        } catch (err) {
          channel = null;
          const c = conn as amqp.ChannelModel | null;
          conn = null;
          await c?.close().catch(() => undefined);
          if (Date.now() > deadline) throw err;
          await new Promise((r) => setTimeout(r, 250));
        }
      }
    }
  } finally {
    const c = conn as amqp.ChannelModel | null;
    await c?.close().catch(() => undefined);
  }
  return { resent };
}

/** Message counts of a queue (ready, not unacked) on the broker, or null when it does not answer. */
export async function queueDepth(url: string, queue: string): Promise<number | null> {
  try {
    const conn = await amqp.connect(url);
    try {
      const ch = await conn.createChannel();
      const { messageCount } = await ch.assertQueue(queue, { durable: true });
      await ch.close();
      return messageCount;
    } finally {
      await conn.close();
    }
  } catch {
    return null;
  }
}
