import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { connect, type Channel, type Options } from 'amqplib';
import { Redis } from 'ioredis';
import pino from 'pino';
import {
  createRedis,
  deadLetterQueueName,
  processedKey,
  processingKey,
  startBridge,
  type BridgeDeps,
  type BridgeHandle,
  type MessageLocks,
  type StartRun,
} from '../../bridge';
import type { ExperimentRunRequested } from '../../src/domain/message';
import type { Logger } from '../../src/logger';

/** Real RabbitMQ and Redis on this machine; every fixture uses its own queue and message ids. */
export const AMQP_URL = 'amqp://guest:guest@127.0.0.1:5672/%2F';
export const REDIS = { host: '127.0.0.1', port: 6379, username: undefined, password: undefined, db: 0 };

const EXAMPLE_PATH = path.resolve(__dirname, '../fixtures/platform-message-example.json');
const execFileAsync = promisify(execFile);

export type LogLine = Record<string, unknown> & { code?: string; msg?: string };

export interface CapturedLog {
  log: Logger;
  lines: LogLine[];
  withCode(code: string): LogLine[];
}

export function captureLogger(): CapturedLog {
  const lines: LogLine[] = [];
  const log = pino(
    { level: 'debug', base: null },
    {
      write(chunk: string): void {
        for (const line of chunk.split('\n')) if (line.trim() !== '') lines.push(JSON.parse(line) as LogLine);
      },
    },
  );
  return { log, lines, withCode: (code) => lines.filter((l) => l.code === code) };
}

export async function pollUntil<T>(
  what: string,
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** The platform's example message (ids as JSON strings) with a fresh message_id. */
export function platformMessage(queue: string): Record<string, unknown> & { message_id: string } {
  const example = JSON.parse(readFileSync(EXAMPLE_PATH, 'utf8')) as Record<string, unknown>;
  return { ...example, message_id: randomUUID(), source: { service: 'arcloop-agent-benchmark', queue } };
}

/** Publishes the way platform/lib/rabbitmq.ts does (CONTRACT §1.1): own connection, confirm channel. */
export async function publishLikePlatform(
  queue: string,
  body: string | Buffer,
  messageId?: string,
): Promise<void> {
  const model = await connect(AMQP_URL);
  try {
    const channel = await model.createConfirmChannel();
    await channel.assertQueue(queue, { durable: true });
    const props: Options.Publish = { persistent: true, contentType: 'application/json' };
    if (messageId !== undefined) props.messageId = messageId;
    channel.sendToQueue(queue, typeof body === 'string' ? Buffer.from(body, 'utf8') : body, props);
    await channel.waitForConfirms();
  } finally {
    await model.close();
  }
}

export async function withChannel<T>(fn: (channel: Channel) => Promise<T>): Promise<T> {
  const model = await connect(AMQP_URL);
  try {
    const channel = await model.createChannel();
    // A failed passive check closes the channel; keep that from becoming an unhandled 'error'.
    channel.on('error', () => undefined);
    return await fn(channel);
  } finally {
    await model.close().catch(() => undefined);
  }
}

export function queueDepth(queue: string): Promise<number> {
  return withChannel(async (ch) => (await ch.checkQueue(queue)).messageCount);
}

/** Closes this bridge's broker connections from the server side (as a broker restart would). */
export async function forceCloseConnections(queue: string): Promise<number> {
  // Tab-separated rows: the Erlang pid as close_connection wants it, then the client properties
  // (whose connection_name the bridge sets to include its queue).
  const { stdout } = await execFileAsync('rabbitmqctl', [
    '-q',
    'list_connections',
    'pid',
    'client_properties',
  ]);
  const pids = stdout
    .split('\n')
    .filter((line) => line.includes(`{"connection_name","agentbench-bridge ${queue} `))
    .map((line) => line.split('\t')[0] ?? '');
  for (const pid of pids)
    await execFileAsync('rabbitmqctl', ['close_connection', pid, 'agentbench test: forced close']);
  return pids.length;
}

export interface StartCall {
  message: ExperimentRunRequested;
  meta: { workflowId: string; dedupSuffix: string };
}

/** Behaves like Temporal's USE_EXISTING start: a known workflow id is not started again. */
export function recordingStartRun(failures: (attempt: number) => Error | undefined = () => undefined): {
  startRun: StartRun;
  calls: StartCall[];
} {
  const calls: StartCall[] = [];
  const known = new Set<string>();
  const startRun: StartRun = async (message, meta) => {
    calls.push({ message, meta });
    const failure = failures(calls.length);
    if (failure) throw failure;
    const started = !known.has(meta.workflowId);
    known.add(meta.workflowId);
    return { workflowId: meta.workflowId, started };
  };
  return { startRun, calls };
}

export interface FixtureOptions {
  startRun: StartRun;
  /** Default: a fresh client to the local Redis; null = no Redis at all. */
  redis?: Redis | null;
  locks?: (redis: Redis, log: Logger) => MessageLocks;
  reconnect?: BridgeDeps['reconnect'];
  startRetry?: BridgeDeps['startRetry'];
  startMaxAttempts?: BridgeDeps['startMaxAttempts'];
  prefetch?: number;
  metrics?: BridgeDeps['metrics'];
}

export interface BridgeFixture {
  queue: string;
  bridge: BridgeHandle;
  logs: CapturedLog;
  /** A plain client for assertions, separate from the bridge's own. */
  redis: Redis;
  /** Registers a dedup suffix whose Redis keys cleanup() deletes. */
  trackSuffix(suffix: string): void;
  cleanup(): Promise<void>;
}

export async function startFixture(opts: FixtureOptions): Promise<BridgeFixture> {
  const queue = `agentbench.test.${randomUUID()}`;
  const logs = captureLogger();
  const redis = new Redis({ ...REDIS, lazyConnect: false });
  const bridgeRedis = opts.redis === undefined ? createRedis(REDIS) : opts.redis;
  const suffixes = new Set<string>();
  const bridge = await startBridge({
    amqpUrl: AMQP_URL,
    queue,
    prefetch: opts.prefetch ?? 4,
    redis: bridgeRedis,
    ...(opts.locks && bridgeRedis ? { locks: opts.locks(bridgeRedis, logs.log) } : {}),
    log: logs.log,
    startRun: opts.startRun,
    reconnect: opts.reconnect ?? { initialDelayMs: 100, maxDelayMs: 1000 },
    startRetry: opts.startRetry ?? { attempts: 3, initialDelayMs: 20 },
    ...(opts.startMaxAttempts !== undefined ? { startMaxAttempts: opts.startMaxAttempts } : {}),
    metrics: opts.metrics,
  });
  return {
    queue,
    bridge,
    logs,
    redis,
    trackSuffix: (suffix) => suffixes.add(suffix),
    async cleanup() {
      await bridge.stop();
      await withChannel(async (ch) => {
        await ch.deleteQueue(queue);
        await ch.deleteQueue(deadLetterQueueName(queue));
      });
      const keys = [...suffixes].flatMap((s) => [processingKey(s), processedKey(s)]);
      if (keys.length > 0) await redis.del(...keys);
      redis.disconnect();
      bridgeRedis?.disconnect();
    },
  };
}
