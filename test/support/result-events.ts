import { readFileSync } from 'node:fs';
import path from 'node:path';
import Ajv2020 from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import amqp from 'amqplib';

const ajv = new Ajv2020({ strict: true, allErrors: true });
addFormats(ajv);
const schema = (file: string) =>
  ajv.compile(JSON.parse(readFileSync(path.resolve(__dirname, '../../contracts', file), 'utf8')) as object);
const validators = {
  'run_case.finished': schema('run_case.finished.v1.schema.json'),
  'experiment_run.finished': schema('experiment_run.finished.v1.schema.json'),
};

/** Throws unless `body` is valid under its contracts/ JSON Schema (chosen by its message_type). */
export function assertValidResultEvent(body: unknown): void {
  const type = (body as { message_type?: string }).message_type;
  const validate = validators[type as keyof typeof validators];
  if (!validate) throw new Error(`unknown message_type ${String(type)}`);
  if (!validate(body)) throw new Error(`${type} violates its schema: ${ajv.errorsText(validate.errors)}`);
}

export interface ReceivedResultEvent {
  routingKey: string;
  messageId: string | undefined;
  persistent: boolean;
  body: Record<string, unknown> & { event_id: string; message_type: string };
}

/**
 * A durable queue of the test's own bound to the result exchange (`#`), read with basic.get so a
 * test can collect across a broker restart. delete() removes the queue and the exchange.
 */
export async function bindResultQueue(url: string, exchange: string, queue: string) {
  const open = async () => {
    const connection = await amqp.connect(url);
    connection.on('error', () => undefined);
    const channel = await connection.createChannel();
    channel.on('error', () => undefined);
    return { connection, channel };
  };
  let session = await open();
  await session.channel.assertExchange(exchange, 'topic', { durable: true });
  await session.channel.assertQueue(queue, { durable: true });
  await session.channel.bindQueue(queue, exchange, '#');
  return {
    /** Takes every message now in the queue (acked). */
    async drain(): Promise<ReceivedResultEvent[]> {
      const out: ReceivedResultEvent[] = [];
      for (;;) {
        const msg = await session.channel.get(queue, { noAck: true });
        if (msg === false) return out;
        out.push({
          routingKey: msg.fields.routingKey,
          messageId: msg.properties.messageId as string | undefined,
          persistent: msg.properties.deliveryMode === 2,
          body: JSON.parse(msg.content.toString('utf8')) as ReceivedResultEvent['body'],
        });
      }
    },
    /** After the broker was restarted. */
    async reconnect(): Promise<void> {
      await session.connection.close().catch(() => undefined);
      session = await open();
    },
    async close(): Promise<void> {
      await session.connection.close().catch(() => undefined);
    },
    async delete(): Promise<void> {
      await session.channel.deleteQueue(queue).catch(() => undefined);
      await session.channel.deleteExchange(exchange).catch(() => undefined);
      await session.connection.close().catch(() => undefined);
    },
  };
}
