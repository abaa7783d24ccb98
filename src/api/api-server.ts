import Fastify, { type FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import {
  jsonSchemaTransform,
  jsonSchemaTransformObject,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import type { Client } from '@temporalio/client';
import type pg from 'pg';
import type { Config } from '../config';
import type { Logger } from '../logger';
import type { ApiMetrics } from '../metrics/orchestrator-metrics';
import type { Readiness } from '../metrics/readiness';
import { WorkflowViews } from '../runs/run-summary';
import { authenticate, type Principal } from './api-auth';
import { ApiError, createErrorHandler, errorBodySchema, sendError } from './api-errors';
import { health, readiness } from './api-schemas';
import { registerRunRoutes } from './run-routes';

/**
 * `benchctl api`: Fastify with zod schemas (validation and the OpenAPI document from the same
 * source), bearer-token auth on every /v1 route, one error shape, Prometheus metrics. Built without
 * listening, so tests use the real server on an ephemeral port.
 */

export interface ApiServerDeps {
  config: Config;
  log: Logger;
  pool: pg.Pool;
  client: Client;
  metrics: ApiMetrics;
  /** `/readyz`: the caller serves its checks once connected and marks it stopping on SIGTERM. */
  readiness: Readiness;
  /** How often event streams read the run's cases (tests go faster). */
  eventPollMs?: number;
}

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
  }
  interface FastifyContextConfig {
    /** No token needed: probes, metrics and the API's own documentation. */
    public?: boolean;
  }
}

const API_VERSION = '1.0.0';

export async function buildApiServer(deps: ApiServerDeps): Promise<FastifyInstance> {
  const { config, log, client, metrics } = deps;
  const apiLog = log.child({ component: 'api' });
  const app = Fastify({
    logger: false,
    bodyLimit: config.api.maxBodyBytes,
    routerOptions: { maxParamLength: 300 },
    // The loopback check for anonymous access reads the peer address; forwarded headers never count.
    trustProxy: false,
    return503OnClosing: true,
    // Reading a request must not take longer than this; a response (an event stream) may.
    requestTimeout: 30_000,
    keepAliveTimeout: 5_000,
    // Errors of Fastify's own parsing (a malformed URL …) get the same error shape.
    frameworkErrors: (err, _req, reply) => {
      void sendError(reply, new ApiError(400, 'E_API_INVALID_REQUEST', err.message.slice(0, 200)));
    },
    // Not even HTTP (a broken request line or header): the same shape, then the connection closes.
    clientErrorHandler: (err, socket) => {
      if (!socket.writable) return;
      const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
      const body = JSON.stringify({
        error: tooLarge
          ? { code: 'E_API_HEADERS_TOO_LARGE', message: 'request headers are too large' }
          : { code: 'E_API_BAD_HTTP', message: 'the request is not valid HTTP/1.1' },
      });
      socket.end(
        `HTTP/1.1 ${tooLarge ? '431 Request Header Fields Too Large' : '400 Bad Request'}\r\n` +
          `content-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    },
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.decorateRequest('principal', null);
  // Bodies are JSON or nothing: a text/plain body is answered 415, not read as a string.
  app.removeContentTypeParser('text/plain');

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'agentbench-orchestrator API',
        version: API_VERSION,
        description:
          'Submit experiment runs, follow them (status, cases, Server-Sent Events) and cancel or retry them. ' +
          'Result events for downstream services are published to RabbitMQ (contracts/*.schema.json). ' +
          'Every /v1 route needs `Authorization: Bearer <token>` (API_TOKENS; API_READ_TOKENS may only read). ' +
          'Errors are `{ "error": { "code", "message", "details"? } }`.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
      tags: [
        { name: 'runs', description: 'Experiment runs (one Temporal workflow each).' },
        { name: 'operations', description: 'Probes and metrics (no token needed).' },
      ],
    },
    transform: jsonSchemaTransform,
    transformObject: jsonSchemaTransformObject,
  });
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    uiConfig: { docExpansion: 'list', deepLinking: true },
  });

  app.setErrorHandler(createErrorHandler(apiLog));
  app.setNotFoundHandler((req, reply) =>
    sendError(
      reply,
      new ApiError(
        404,
        'E_API_NOT_FOUND',
        `no such route: ${req.method} ${req.url.split('?')[0]?.slice(0, 200)}`,
      ),
    ),
  );

  const started = new WeakMap<object, bigint>();
  app.addHook('onRequest', async (req) => {
    started.set(req, process.hrtime.bigint());
    const route = req.routeOptions.url ?? '';
    if (req.routeOptions.config.public || route === '/docs' || route.startsWith('/docs/')) return;
    req.principal = authenticate(config.api, {
      authorization: req.headers.authorization,
      remoteAddress: req.socket.remoteAddress,
      write: req.method !== 'GET' && req.method !== 'HEAD',
    });
    // JSON is UTF-8 (RFC 8259): a body declared in another charset would be misread, so it is refused.
    const charset = /;\s*charset="?([^";\s]+)/i.exec(req.headers['content-type'] ?? '')?.[1];
    if (charset !== undefined && !/^utf-?8$/i.test(charset)) {
      throw new ApiError(
        415,
        'E_API_UNSUPPORTED_MEDIA_TYPE',
        'JSON bodies are UTF-8: send charset=utf-8 or none',
      );
    }
  });
  app.addHook('onResponse', async (req, reply) => {
    const t0 = started.get(req);
    const seconds = t0 === undefined ? 0 : Number(process.hrtime.bigint() - t0) / 1e9;
    const route = req.routeOptions.url ?? 'unmatched';
    metrics.request(route, req.method, reply.statusCode, seconds);
    apiLog.info(
      {
        code: 'API_REQUEST',
        method: req.method,
        route,
        status: reply.statusCode,
        ms: Math.round(seconds * 1000),
        token: req.principal?.name,
      },
      'request',
    );
  });

  const r = app.withTypeProvider<ZodTypeProvider>();
  r.get(
    '/healthz',
    {
      config: { public: true },
      schema: {
        tags: ['operations'],
        summary: 'Liveness: the process answers.',
        security: [],
        response: { 200: health },
      },
    },
    async () => ({ status: 'ok' as const }),
  );
  r.get(
    '/readyz',
    {
      config: { public: true },
      schema: {
        tags: ['operations'],
        summary: 'Readiness: Postgres and Temporal answer; not ready while starting or stopping.',
        security: [],
        response: { 200: readiness, 503: readiness },
      },
    },
    async (_req, reply) => {
      const report = await deps.readiness.report();
      return reply.code(report.status === 'ready' ? 200 : 503).send(report);
    },
  );
  r.get(
    '/metrics',
    {
      config: { public: true },
      schema: { tags: ['operations'], summary: 'Prometheus metrics (text format).', security: [] },
    },
    async (_req, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()),
  );
  r.get('/openapi.json', { config: { public: true }, schema: { hide: true } }, async () => app.swagger());

  const views = new WorkflowViews(client);
  const streams = new Set<AbortController>();
  // Event streams hold their connections open: end them first, or close() would wait for them.
  app.addHook('preClose', async () => {
    for (const s of streams) s.abort();
  });
  await registerRunRoutes(r, { ...deps, log: apiLog, views, streams, errorBody: errorBodySchema });
  return app;
}
