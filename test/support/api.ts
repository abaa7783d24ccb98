import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { loadConfig, type Config } from '../../src/config';
import { createLogger } from '../../src/logger';
import { buildApiServer } from '../../src/api/api-server';
import { postgresCheck, temporalCheck } from '../../src/metrics/dependency-checks';
import { ApiMetrics } from '../../src/metrics/orchestrator-metrics';
import { Readiness } from '../../src/metrics/readiness';
import type { Stack } from './stack';

/** Tokens of the test API: one that may write, one that may only read. */
export const WRITE_TOKEN = 'test-writer-token-0123456789';
export const READ_TOKEN = 'test-reader-token-0123456789';

export interface TestApi {
  baseUrl: string;
  app: FastifyInstance;
  config: Config;
  metrics: ApiMetrics;
  /** fetch with the write token unless `token` says otherwise (null: no Authorization header). */
  call(
    method: string,
    path: string,
    opts?: { token?: string | null; body?: unknown; rawBody?: string; headers?: Record<string, string> },
  ): Promise<{ status: number; headers: Headers; json: () => Promise<unknown>; text: () => Promise<string> }>;
  stop(): Promise<void>;
}

/** The real API server of a stack (its database, Temporal client and task queue) on an ephemeral loopback port. */
export async function startTestApi(stack: Stack, env: Record<string, string> = {}): Promise<TestApi> {
  const config = loadConfig({
    ...stack.env,
    API_TOKENS: `writer:${WRITE_TOKEN}`,
    API_READ_TOKENS: `reader:${READ_TOKEN}`,
    ...env,
  });
  const metrics = new ApiMetrics();
  const readiness = new Readiness();
  readiness.serve({
    temporal: temporalCheck(stack.client.connection, 3000),
    postgres: postgresCheck(stack.db.pool),
  });
  const app = await buildApiServer({
    readiness,
    config,
    log: createLogger({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
    pool: stack.db.pool,
    client: stack.client,
    metrics,
    eventPollMs: 100,
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as AddressInfo;
  const baseUrl = `http://127.0.0.1:${port}`;
  return {
    baseUrl,
    app,
    config,
    metrics,
    async call(method, path, opts = {}) {
      const headers: Record<string, string> = { ...opts.headers };
      const token = opts.token === undefined ? WRITE_TOKEN : opts.token;
      if (token !== null) headers.authorization = `Bearer ${token}`;
      let body: string | undefined = opts.rawBody;
      if (opts.body !== undefined) {
        body = JSON.stringify(opts.body);
        headers['content-type'] ??= 'application/json';
      }
      const res = await fetch(`${baseUrl}${path}`, { method, headers, body });
      const text = await res.text();
      return {
        status: res.status,
        headers: res.headers,
        json: async () => JSON.parse(text) as unknown,
        text: async () => text,
      };
    },
    async stop() {
      await app.close();
    },
  };
}

export interface ServerSentEvent {
  id: string | undefined;
  event: string;
  data: unknown;
}

/** Reads an event stream to its end (the server closes it), or throws after `timeoutMs`. */
export async function readEventStream(
  url: string,
  token: string,
  timeoutMs = 120_000,
): Promise<ServerSentEvent[]> {
  const res = await fetch(url, {
    headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' },
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (res.status !== 200) throw new Error(`event stream answered ${res.status}: ${await res.text()}`);
  if (!res.headers.get('content-type')?.startsWith('text/event-stream'))
    throw new Error('not an event stream');
  const events: ServerSentEvent[] = [];
  const decoder = new TextDecoder();
  let buffer = '';
  const reader = res.body?.getReader();
  if (!reader) throw new Error('no body');
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buffer += decoder.decode(value, { stream: true });
    let end = buffer.indexOf('\n\n');
    while (end >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const fields = new Map<string, string>();
      for (const line of block.split('\n')) {
        if (line.startsWith(':') || line === '') continue;
        const colon = line.indexOf(':');
        fields.set(line.slice(0, colon), line.slice(colon + 1).trimStart());
      }
      if (fields.has('data')) {
        events.push({
          id: fields.get('id'),
          event: fields.get('event') ?? 'message',
          data: JSON.parse(fields.get('data') ?? 'null'),
        });
      }
      end = buffer.indexOf('\n\n');
    }
    if (done) return events;
  }
}
