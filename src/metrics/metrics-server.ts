import http from 'node:http';
import type { Registry } from 'prom-client';
import type { Logger } from '../logger';
import { closeHttpServer, listenHttpServer } from '../http-server-lifecycle';
import { MetricsPortInUseError } from './errors';
import type { Readiness } from './readiness';

interface MetricsServerParams {
  registry: Registry;
  log: Logger;
  host: string;
  /** A fixed port, or 0 for an ephemeral one (tests). Disabling is the caller's decision: then no server is made. */
  port: number;
  /** Named in the port-in-use error. */
  portVariable?: string;
  /** Answers `GET /readyz`; without it that path is not served. */
  readiness?: Readiness;
}

const STOP_GRACE_MS = 2_000;

/**
 * `GET /metrics` (Prometheus text format), `GET /healthz` (liveness: the process answers) and
 * `GET /readyz` (readiness: its dependencies answer, see readiness.ts) on node:http. Read-only and
 * free of secrets and ids, which is why it may listen on every interface for the scraper and probes.
 */
export class MetricsServer {
  private server: http.Server | null = null;

  constructor(private readonly p: MetricsServerParams) {}

  /** Resolves with the bound port; rejects with MetricsPortInUseError when the port is taken. */
  async start(): Promise<{ port: number }> {
    if (this.server) throw new Error('MetricsServer already started');
    const server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        this.p.log.error({ code: 'E_METRICS_SCRAPE_FAILED', err }, 'metrics scrape failed');
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('metrics collection failed\n');
      });
    });
    // Scrapes are short; a slow or idle client must not hold a socket for long.
    server.requestTimeout = 10_000;
    server.keepAliveTimeout = 5_000;
    let port: number;
    try {
      port = await listenHttpServer(server, this.p.port, this.p.host);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
        throw new MetricsPortInUseError(this.p.portVariable ?? 'METRICS_PORT', this.p.host, this.p.port);
      }
      throw err;
    }
    server.on('error', (err) => this.p.log.error({ code: 'E_METRICS_SERVER', err }, 'metrics server error'));
    this.server = server;
    this.p.log.info(
      { code: 'METRICS_SERVER_STARTED', host: this.p.host, port },
      'metrics endpoint listening',
    );
    return { port };
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    await closeHttpServer(server, STOP_GRACE_MS);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    const readiness = this.p.readiness;
    if (path !== '/metrics' && path !== '/healthz' && !(path === '/readyz' && readiness)) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { 'content-type': 'text/plain', allow: 'GET, HEAD' }).end('method not allowed\n');
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (path === '/readyz' && readiness) {
      const report = await readiness.report();
      const body = `${JSON.stringify(report)}\n`;
      res.writeHead(report.status === 'ready' ? 200 : 503, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
        'cache-control': 'no-store',
      });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    const body = await this.p.registry.metrics();
    res.writeHead(200, {
      'content-type': this.p.registry.contentType,
      'content-length': Buffer.byteLength(body),
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  }
}
