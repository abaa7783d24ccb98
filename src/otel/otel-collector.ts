import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import type pg from 'pg';
import { z } from 'zod';
import {
  attributeToCase,
  correlationFromHeaders,
  DATA_ITEM_ID_KEY,
  EXPERIMENT_ID_KEY,
  flattenLogs,
  flattenSpans,
  OtlpPayloadError,
  RUN_CASE_ID_KEY,
  sanitizeDocument,
  signalForPath,
  type CaseAttribution,
  type LogRow,
  type OtelSignal,
  type SpanRow,
} from '../domain/otlp-flatten';
import type { Logger } from '../logger';
import { insertLogs, insertSpans } from './otel-repository';
import { decodeOtlpProtobuf } from './otlp-protobuf';
import { closeHttpServer } from '../http-server-shutdown';

/**
 * The OTLP/HTTP collector agents export to (CONTRACT §4.1, ARCHITECTURE §5.6): POST
 * `/api/otel/v1/{traces,logs}` (the platform's paths) and `/v1/{traces,logs}` (what OTel SDKs
 * append to OTEL_EXPORTER_OTLP_ENDPOINT). Bodies: OTLP JSON or protobuf, gzip or not, chunked or
 * not, or the simplified JSON forms. Each case gets an unguessable ingest token; what arrives with
 * it (header, the mock gateway's forward, or from a container IP bound to it) is stored under that
 * case whatever the body claims. A body claiming a case without one is refused unless
 * `allowUntokened` (the original accepted anyone's claims). Unlike the original, which answered
 * 200 to everything, failures are told apart: 400 bad body, 403 attribution, 404 path, 405
 * method, 413 size, 415 encoding, 503 storage — and a rejected body stores nothing.
 */

export const INGEST_TOKEN_HEADER = 'x-agentbench-ingest-token';
const GATEWAY_HEADER = 'x-mock-gateway';
const GATEWAY_NAME = 'otel-default';

/** Requests decoded and stored at once; beyond it clients get 503 and retry (OTLP clients do). */
const MAX_CONCURRENT_INGESTS = 64;
/** Bytes of an oversized body read and discarded so the client can still read the 413. */
const OVERSIZE_DRAIN_BYTES = 8 * 1024 * 1024;
const REQUEST_TIMEOUT_MS = 60_000;
const STORAGE_UNAVAILABLE = 'telemetry storage unavailable, retry';
const STOP_GRACE_MS = 5_000;

export interface OtelCollectorParams {
  pool: pg.Pool;
  log: Logger;
  host: string;
  /** 0 = an ephemeral port. */
  port: number;
  /** Limit for the body as received and, separately, after gunzip. */
  maxBodyBytes: number;
  allowUntokened: boolean;
  /** Told how each OTLP request was answered (the worker's metrics); must not throw. */
  onIngest?: (event: { signal: OtelSignal | 'unknown'; status: number; records: number }) => void;
}

export interface OtelIngestRequest {
  /** The request path (an absolute URL, as a proxy sees it, is accepted too). */
  path: string;
  headers: http.IncomingHttpHeaders | Record<string, string | string[] | undefined>;
  /** The body bytes as received (still gzip-compressed when Content-Encoding says so). */
  body: Uint8Array;
}

export interface OtelIngestResponse {
  status: number;
  headers: Record<string, string>;
  /** JSON text. */
  body: string;
}

const caseSchema = z.object({
  runCaseId: z.number().int().positive(),
  experimentId: z.number().int().positive(),
  dataItemId: z.number().int().positive(),
});

/** What a request is answered with when it goes wrong; `status` is the HTTP status. */
class IngestRejection extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
  ) {
    super(reason);
    this.name = 'IngestRejection';
  }
}

const gunzip = promisify(zlib.gunzip);

function headerText(headers: OtelIngestRequest['headers'], name: string): string {
  const value = headers[name];
  return (Array.isArray(value) ? value[0] : value)?.trim() ?? '';
}

function pathOf(target: string): string | null {
  try {
    return new URL(target, 'http://collector.invalid').pathname;
  } catch {
    return null;
  }
}

/** `::ffff:172.17.0.3` (IPv4 on a dual-stack socket) and `172.17.0.3` are the same source. */
function normalizeIp(ip: string): string {
  const lower = ip.trim().toLowerCase();
  return lower.startsWith('::ffff:') && lower.includes('.') ? lower.slice('::ffff:'.length) : lower;
}

function reply(
  status: number,
  payload: Record<string, unknown>,
  extraHeaders: Record<string, string> = {},
): OtelIngestResponse {
  return {
    status,
    headers: { 'content-type': 'application/json', [GATEWAY_HEADER]: GATEWAY_NAME, ...extraHeaders },
    body: JSON.stringify({ ok: status === 200, mock: GATEWAY_NAME, ...payload }),
  };
}

export class OtelCollector {
  private readonly pool: pg.Pool;
  private readonly log: Logger;
  private readonly host: string;
  private readonly requestedPort: number;
  private readonly maxBodyBytes: number;
  private readonly allowUntokened: boolean;
  private readonly onIngest: OtelCollectorParams['onIngest'];
  private readonly cases = new Map<string, CaseAttribution>();
  private readonly sources = new Map<string, string>();
  private server: http.Server | null = null;
  private inFlight = 0;
  /** Every ingest in progress, from the moment its request arrived: what drain() waits for. */
  private readonly pending = new Set<Promise<unknown>>();

  constructor(p: OtelCollectorParams) {
    this.pool = p.pool;
    this.log = p.log;
    this.host = p.host;
    this.requestedPort = p.port;
    this.maxBodyBytes = p.maxBodyBytes;
    this.allowUntokened = p.allowUntokened;
    this.onIngest = p.onIngest;
  }

  async start(): Promise<{ port: number }> {
    if (this.server) throw new Error('OtelCollector already started');
    const server = http.createServer({ requestTimeout: REQUEST_TIMEOUT_MS }, (req, res) => {
      this.track(this.handle(req, res)).catch((err: unknown) => {
        this.log.error({ code: 'E_OTEL_INGEST_FAILED', err }, 'otel collector request handler failed');
        if (!res.headersSent) this.send(res, reply(500, { error: 'internal error' }), true);
        else res.destroy();
      });
    });
    // Malformed HTTP: answer 400 if the socket still can, never let it reach 'error'.
    server.on('clientError', (_err, socket) => {
      if (socket.writable)
        socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      else socket.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.requestedPort, this.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) =>
      this.log.error({ code: 'E_OTEL_COLLECTOR_SERVER', err }, 'otel collector server error'),
    );
    this.server = server;
    const { port } = server.address() as AddressInfo;
    this.log.info({ code: 'OTEL_COLLECTOR_STARTED', host: this.host, port }, 'otel collector listening');
    return { port };
  }

  /** Stops accepting, lets in-flight requests finish (up to a grace period), then closes every socket. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    await closeHttpServer(server, STOP_GRACE_MS);
  }

  /** A new token for a case; its telemetry is stored under that case whatever it claims. */
  issueToken(c: CaseAttribution): string {
    const parsed = caseSchema.parse(c);
    const token = randomBytes(24).toString('base64url');
    this.cases.set(token, parsed);
    return token;
  }

  /** The token stops working, and so does every source IP bound to it. */
  revokeToken(token: string): void {
    this.cases.delete(token);
    for (const [ip, bound] of this.sources) if (bound === token) this.sources.delete(ip);
  }

  /** Untokened posts from `ip` (a case container's address on its Docker network) belong to the token's case. */
  bindSource(ip: string, token: string): void {
    if (!this.cases.has(token)) throw new Error('bindSource: unknown ingest token');
    this.sources.set(normalizeIp(ip), token);
  }

  /** The ingest token bound to a container address, for posts the mock gateway intercepted. */
  tokenForSource(ip: string): string | undefined {
    return this.sources.get(normalizeIp(ip));
  }

  unbindSource(ip: string): void {
    this.sources.delete(normalizeIp(ip));
  }

  /**
   * For the mock gateway: an OTel post it intercepted for the case holding `token`, answered as
   * the collector would answer it directly.
   */
  /**
   * Resolves once every ingest that had arrived when it was called has been stored or refused
   * (bounded by `timeoutMs`). Called after a case's container is gone: nothing can send it spans
   * any more, so once this resolves its telemetry is complete — no flush grace is needed.
   */
  async drain(timeoutMs: number): Promise<boolean> {
    // Bytes already accepted by the kernel become requests on the next turns of the event loop.
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    const inProgress = [...this.pending];
    if (inProgress.length === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    const done = Promise.allSettled(inProgress).then(() => true as const);
    try {
      return await Promise.race([done, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  private track<T>(work: Promise<T>): Promise<T> {
    this.pending.add(work);
    const forget = () => this.pending.delete(work);
    work.then(forget, forget);
    return work;
  }

  async ingestForCase(token: string, req: OtelIngestRequest): Promise<OtelIngestResponse> {
    return this.track(this.ingestForCaseNow(token, req));
  }

  private async ingestForCaseNow(token: string, req: OtelIngestRequest): Promise<OtelIngestResponse> {
    const path = pathOf(req.path);
    const attribution = this.cases.get(token);
    if (!attribution)
      return this.rejected(new IngestRejection(403, 'unknown ingest token'), path ?? req.path, 'gateway');
    const busy = this.busy(path ?? req.path, 'gateway');
    if (busy) return busy;
    this.inFlight++;
    try {
      return await this.ingest(path, attribution, req, 'gateway');
    } finally {
      this.inFlight--;
    }
  }

  // -------------------------------------------------------------------------------------------

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const remote = normalizeIp(req.socket.remoteAddress ?? '');
    const path = pathOf(req.url ?? '/');
    if (path === null || signalForPath(path) === null) {
      this.refuseUnread(
        req,
        res,
        this.rejected(new IngestRejection(404, 'not an OTLP ingest path'), req.url ?? '', remote),
      );
      return;
    }
    const early = this.precheck(req, path, remote) ?? this.busy(path, remote);
    if (early) {
      this.refuseUnread(req, res, early);
      return;
    }
    // Counted from before the body is read: the limit bounds the memory bodies take, too.
    this.inFlight++;
    try {
      const body = await this.readBody(req);
      if (body === 'aborted') return;
      if (body === 'too-large') {
        this.send(
          res,
          this.rejected(new IngestRejection(413, `body exceeds ${this.maxBodyBytes} bytes`), path, remote),
          true,
        );
        return;
      }
      const attribution = this.attributionOf(req.headers, remote) ?? null;
      this.send(res, await this.ingest(path, attribution, { path, headers: req.headers, body }, remote));
    } finally {
      this.inFlight--;
    }
  }

  /** 503 (clients retry) while MAX_CONCURRENT_INGESTS requests are being read, decoded or stored. */
  private busy(path: string, origin: string): OtelIngestResponse | null {
    if (this.inFlight < MAX_CONCURRENT_INGESTS) return null;
    const response = this.rejected(new IngestRejection(503, 'collector busy, retry'), path, origin);
    return { ...response, headers: { ...response.headers, 'retry-after': '1' } };
  }

  /** Answers without reading the body; the connection closes after the answer. */
  private refuseUnread(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    response: OtelIngestResponse,
  ): void {
    this.send(res, response, true);
    req.resume();
  }

  /** What can be refused before reading the body. */
  private precheck(req: http.IncomingMessage, path: string, remote: string): OtelIngestResponse | null {
    if (req.method !== 'POST') {
      const response = this.rejected(new IngestRejection(405, 'method not allowed'), path, remote);
      return { ...response, headers: { ...response.headers, allow: 'POST' } };
    }
    const token = headerText(req.headers, INGEST_TOKEN_HEADER);
    if (token !== '' && !this.cases.has(token)) {
      return this.rejected(new IngestRejection(403, 'unknown ingest token'), path, remote);
    }
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > this.maxBodyBytes + OVERSIZE_DRAIN_BYTES) {
      return this.rejected(new IngestRejection(413, `body exceeds ${this.maxBodyBytes} bytes`), path, remote);
    }
    return null;
  }

  private attributionOf(headers: http.IncomingHttpHeaders, remote: string): CaseAttribution | undefined {
    const token = headerText(headers, INGEST_TOKEN_HEADER);
    if (token !== '') return this.cases.get(token);
    const bound = this.sources.get(remote);
    return bound === undefined ? undefined : this.cases.get(bound);
  }

  /** The whole body, or 'too-large' once it passes the limit (the rest is read and discarded up to a cap). */
  private async readBody(req: http.IncomingMessage): Promise<Buffer | 'too-large' | 'aborted'> {
    const chunks: Buffer[] = [];
    let total = 0;
    try {
      for await (const chunk of req) {
        const buffer = chunk as Buffer;
        total += buffer.length;
        if (total > this.maxBodyBytes + OVERSIZE_DRAIN_BYTES) return 'too-large';
        if (total <= this.maxBodyBytes) chunks.push(buffer);
      }
    } catch {
      return 'aborted';
    }
    return total > this.maxBodyBytes ? 'too-large' : Buffer.concat(chunks, total);
  }

  private async ingest(
    path: string | null,
    attribution: CaseAttribution | null,
    req: OtelIngestRequest,
    origin: string,
  ): Promise<OtelIngestResponse> {
    const startedAt = Date.now();
    const signal = path === null ? null : signalForPath(path);
    if (path === null || signal === null) {
      return this.rejected(new IngestRejection(404, 'not an OTLP ingest path'), path ?? req.path, origin);
    }
    try {
      const document = await this.decode(signal, req);
      const extras = correlationFromHeaders(req.headers);
      const inserted =
        signal === 'traces'
          ? await this.admit(flattenSpans(document, extras), attribution, insertSpans)
          : await this.admit(flattenLogs(document, extras), attribution, insertLogs);
      this.log.debug(
        {
          code: 'OTEL_INGEST_OK',
          signal,
          inserted,
          run_case_id: attribution?.runCaseId ?? null,
          origin,
          bytes: req.body.byteLength,
          elapsed_ms: Date.now() - startedAt,
        },
        'otel ingest stored',
      );
      this.observe(signal, 200, inserted);
      return reply(200, { inserted });
    } catch (err) {
      if (err instanceof IngestRejection) return this.rejected(err, path, origin, attribution);
      if (err instanceof OtlpPayloadError)
        return this.rejected(new IngestRejection(400, err.message), path, origin, attribution);
      throw err;
    }
  }

  private async decode(signal: OtelSignal, req: OtelIngestRequest): Promise<unknown> {
    const encoding = headerText(req.headers, 'content-encoding').toLowerCase();
    let body = Buffer.from(req.body.buffer, req.body.byteOffset, req.body.byteLength);
    if (body.length > this.maxBodyBytes)
      throw new IngestRejection(413, `body exceeds ${this.maxBodyBytes} bytes`);
    if (encoding === 'gzip' || encoding === 'x-gzip') {
      try {
        body = await gunzip(body, { maxOutputLength: this.maxBodyBytes });
      } catch (err) {
        if (err instanceof RangeError)
          throw new IngestRejection(413, `decompressed body exceeds ${this.maxBodyBytes} bytes`);
        throw new IngestRejection(400, `invalid gzip body: ${(err as Error).message}`);
      }
    } else if (encoding !== '' && encoding !== 'identity') {
      throw new IngestRejection(415, `unsupported content-encoding: ${encoding}`);
    }

    const contentType = headerText(req.headers, 'content-type').toLowerCase();
    if (contentType.includes('application/x-protobuf') || contentType.includes('application/protobuf')) {
      return decodeOtlpProtobuf(signal, body);
    }
    const text = body.toString('utf8').replace(/^\ufeff/, '');
    if (text.trim() === '') return {};
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new OtlpPayloadError(
        `body is neither OTLP protobuf (by content-type) nor JSON: ${(err as Error).message}`,
      );
    }
    return sanitizeDocument(parsed);
  }

  /** Attributes the rows to the request's case (or refuses unattributed ones) and stores them. */
  private async admit<T extends SpanRow | LogRow>(
    flattened: T[],
    attribution: CaseAttribution | null,
    insert: (pool: pg.Pool, rows: readonly T[]) => Promise<number>,
  ): Promise<number> {
    let rows = flattened;
    if (attribution) {
      rows = attributeToCase(rows, attribution);
    } else if (rows.length > 0 && !this.allowUntokened) {
      const claimed = rows.find((row) => row.run_case_id !== null)?.run_case_id;
      throw new IngestRejection(
        403,
        claimed === undefined
          ? `no ingest token (${INGEST_TOKEN_HEADER}) and untokened ingest is disabled`
          : `body claims run case ${claimed} without its ingest token (${INGEST_TOKEN_HEADER})`,
      );
    }
    try {
      return await insert(this.pool, rows);
    } catch (err) {
      this.log.error(
        { code: 'E_OTEL_INGEST_FAILED', rows: rows.length, err },
        'otel ingest could not be stored',
      );
      throw new IngestRejection(503, STORAGE_UNAVAILABLE);
    }
  }

  private rejected(
    rejection: IngestRejection,
    path: string,
    origin: string,
    attribution?: CaseAttribution | null,
  ): OtelIngestResponse {
    // A storage 503 is logged where it happens, with its cause; everything else is the client's doing.
    if (rejection.reason !== STORAGE_UNAVAILABLE) {
      this.log.warn(
        {
          code: 'E_OTEL_INGEST_REJECTED',
          status: rejection.status,
          reason: rejection.reason,
          path,
          origin,
          run_case_id: attribution?.runCaseId ?? null,
        },
        'otel ingest rejected',
      );
    }
    this.observe(signalForPath(pathOf(path) ?? path), rejection.status, 0);
    return reply(rejection.status, { error: rejection.reason });
  }

  private observe(signal: OtelSignal | null, status: number, records: number): void {
    try {
      this.onIngest?.({ signal: signal ?? 'unknown', status, records });
    } catch {
      // Observability must not turn an answered request into a failed one.
    }
  }

  private send(res: http.ServerResponse, response: OtelIngestResponse, close = false): void {
    if (res.headersSent || res.destroyed) return;
    const headers: Record<string, string | number> = {
      ...response.headers,
      'content-length': Buffer.byteLength(response.body),
    };
    if (close) headers.connection = 'close';
    res.writeHead(response.status, headers);
    res.end(response.body);
  }
}

/**
 * The OTEL_* env of a case container: standard SDK configuration, so an agent built on any OTel
 * SDK exports to the collector, tagged with its case, without code changes. `endpoint` is the
 * base URL (SDKs append /v1/traces and /v1/logs).
 */
export function caseOtelEnv(p: {
  endpoint: string;
  token: string;
  serviceName: string;
  runCaseId: number;
  experimentId: number;
  dataItemId: number;
}): Record<string, string> {
  return {
    OTEL_EXPORTER_OTLP_ENDPOINT: p.endpoint.replace(/\/+$/, ''),
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
    OTEL_EXPORTER_OTLP_HEADERS: `${INGEST_TOKEN_HEADER}=${p.token}`,
    OTEL_SERVICE_NAME: p.serviceName,
    OTEL_RESOURCE_ATTRIBUTES: [
      `${RUN_CASE_ID_KEY}=${p.runCaseId}`,
      `${EXPERIMENT_ID_KEY}=${p.experimentId}`,
      `${DATA_ITEM_ID_KEY}=${p.dataItemId}`,
    ].join(','),
    OTEL_TRACES_EXPORTER: 'otlp',
    OTEL_LOGS_EXPORTER: 'otlp',
    OTEL_METRICS_EXPORTER: 'none',
    // SDK defaults batch for 5 s (spans) / 1 s (logs); an agent that stays up after answering
    // would otherwise hold its last spans past the case's flush grace.
    OTEL_BSP_SCHEDULE_DELAY: '500',
    OTEL_BLRP_SCHEDULE_DELAY: '500',
  };
}
