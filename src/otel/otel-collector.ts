import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { Socket } from 'node:net';
import type pg from 'pg';
import { z } from 'zod';
import { correlationFromHeaders } from '../domain/otlp-attributes';
import {
  MAX_DOCUMENT_DEPTH,
  signalForPath,
  type CaseAttribution,
  type OtelSignal,
} from '../domain/otlp-rows';
import type { Logger } from '../logger';
import { closeHttpServer, listenHttpServer } from '../http-server-lifecycle';
import { JsonShapeError, JsonShapeGuard } from './json-shape-guard';
import { MAX_DOCUMENT_CONTAINERS, type OtlpBodyFormat, type OtlpEncodedRows } from './otlp-body';
import { OtlpDecodePool } from './otlp-decode-pool';
import { copyRows } from './otel-repository';

export { caseOtelEnv, INGEST_TOKEN_HEADER } from './case-otel-env';
import { INGEST_TOKEN_HEADER } from './case-otel-env';

/**
 * The OTLP/HTTP collector agents export to (CONTRACT §4.1, ARCHITECTURE §5.6): POST
 * `/api/otel/v1/{traces,logs}` (the platform's paths) and `/v1/{traces,logs}` (what OTel SDKs
 * append to OTEL_EXPORTER_OTLP_ENDPOINT). Bodies: OTLP JSON or protobuf, gzip or not, chunked or
 * not, or the simplified JSON forms.
 *
 * Every case container runs untrusted code and can reach this port, so a request is judged on its
 * headers and its source before a byte of its body is read: its case's ingest token, or no token
 * from a container address bound to a live case (agents of the original, which send none). Anyone
 * else is refused (401 no credentials, 403 unknown token) after at most a few KB of body, unless
 * `allowUntokened` (the original accepted anyone's claims). Each source gets a few connections and
 * concurrent ingests (429 beyond); a body must arrive within a deadline (408, slow uploads); JSON
 * nesting and size are checked as the bytes arrive; big bodies decode in worker threads with a heap
 * cap (otlp-decode-pool), so no body stalls the event loop heartbeats and gateways share.
 * Unlike the original, which answered 200 to everything, failures are told apart: 400 bad body
 * or id, 401/403 authentication, 404 path, 405 method, 408 too slow, 413 size, 415 type or
 * encoding, 429 per-source limit, 503 busy or storage — and a rejected body stores nothing.
 */

const GATEWAY_HEADER = 'x-mock-gateway';
const GATEWAY_NAME = 'otel-default';

/** Requests decoded and stored at once; beyond it clients get 503 and retry (OTLP clients do). */
const MAX_CONCURRENT_INGESTS = 64;
/** Ingests one source address may have in progress; a flooding case cannot take the others' share. */
const MAX_INGESTS_PER_SOURCE = 4;
/** Open connections one source address may hold (idle keep-alive ones included). */
const MAX_CONNECTIONS_PER_SOURCE = 32;
/** A body must have arrived this long after its headers (slow uploads hold nothing for long). */
export const BODY_READ_TIMEOUT_MS = 10_000;
/** Headers must have arrived this long after the connection opened or the last request. */
const HEADERS_TIMEOUT_MS = 10_000;
/** What is read of a refused request's body (so the client can still read the answer). */
const REFUSED_BODY_READ_BYTES = 8 * 1024;
const REFUSED_BODY_LINGER_MS = 1_000;
const STORAGE_UNAVAILABLE = 'telemetry storage unavailable, retry';
const STOP_GRACE_MS = 5_000;

interface OtelCollectorParams {
  pool: pg.Pool;
  log: Logger;
  host: string;
  /** 0 = an ephemeral port. */
  port: number;
  /** Limit for the body as received and, separately, after gunzip. */
  maxBodyBytes: number;
  allowUntokened: boolean;
  /**
   * OTEL_INGEST_ANY_CONTENT_TYPE: read any body that is not protobuf (by content-type) as JSON, as
   * the original did, for agents that post JSON by hand with another or no content type.
   * Otherwise only application/json and application/x-protobuf (or application/protobuf) pass.
   */
  anyContentType?: boolean;
  /** Told how each OTLP request was answered (the worker's metrics); must not throw. */
  onIngest?: (event: { signal: OtelSignal | 'unknown'; status: number; records: number }) => void;
}

interface OtelIngestRequest {
  /** The request path (an absolute URL, as a proxy sees it, is accepted too). */
  path: string;
  headers: http.IncomingHttpHeaders | Record<string, string | string[] | undefined>;
  /** The body bytes as received (still gzip-compressed when Content-Encoding says so). */
  body: Uint8Array;
}

interface OtelIngestResponse {
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

/** How a request's body is to be read, once its headers passed. */
interface BodyPlan {
  format: OtlpBodyFormat;
  gzip: boolean;
}

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

const PROTOBUF_TYPES = new Set(['application/x-protobuf', 'application/protobuf']);

/**
 * The body plan from Content-Type and Content-Encoding. 415 for anything but OTLP's two types
 * (unless `anyContentType`: then everything else is JSON, the original's rule) and for encodings
 * other than gzip and identity.
 */
function bodyPlan(headers: OtelIngestRequest['headers'], anyContentType: boolean): BodyPlan {
  const encoding = headerText(headers, 'content-encoding').toLowerCase();
  if (encoding !== '' && encoding !== 'identity' && encoding !== 'gzip' && encoding !== 'x-gzip')
    throw new IngestRejection(415, `unsupported content-encoding: ${encoding.slice(0, 64)}`);
  const gzip = encoding === 'gzip' || encoding === 'x-gzip';
  const mediaType = (headerText(headers, 'content-type').split(';')[0] ?? '').trim().toLowerCase();
  if (PROTOBUF_TYPES.has(mediaType)) return { format: 'protobuf', gzip };
  if (mediaType === 'application/json' || anyContentType) return { format: 'json', gzip };
  throw new IngestRejection(
    415,
    `unsupported content-type ${JSON.stringify(mediaType.slice(0, 64) || '(none)')}: OTLP/HTTP is application/json or application/x-protobuf`,
  );
}

export class OtelCollector {
  private readonly pool: pg.Pool;
  private readonly log: Logger;
  private readonly host: string;
  private readonly requestedPort: number;
  private readonly maxBodyBytes: number;
  private readonly allowUntokened: boolean;
  private readonly anyContentType: boolean;
  private readonly onIngest: OtelCollectorParams['onIngest'];
  private readonly cases = new Map<string, CaseAttribution>();
  private readonly sources = new Map<string, string>();
  private readonly decoder = new OtlpDecodePool();
  private server: http.Server | null = null;
  private inFlight = 0;
  private readonly inFlightBySource = new Map<string, number>();
  private readonly connectionsBySource = new Map<string, number>();
  /** Every ingest in progress, from the moment its request arrived: what drain() waits for. */
  private readonly pending = new Set<Promise<unknown>>();

  constructor(p: OtelCollectorParams) {
    this.pool = p.pool;
    this.log = p.log;
    this.host = p.host;
    this.requestedPort = p.port;
    this.maxBodyBytes = p.maxBodyBytes;
    this.allowUntokened = p.allowUntokened;
    this.anyContentType = p.anyContentType ?? false;
    this.onIngest = p.onIngest;
  }

  async start(): Promise<{ port: number }> {
    if (this.server) throw new Error('OtelCollector already started');
    const server = http.createServer(
      { requestTimeout: BODY_READ_TIMEOUT_MS * 3, headersTimeout: HEADERS_TIMEOUT_MS },
      (req, res) => {
        this.track(this.handle(req, res)).catch((err: unknown) => {
          this.log.error({ code: 'E_OTEL_INGEST_FAILED', err }, 'otel collector request handler failed');
          if (!res.headersSent) this.send(res, reply(500, { error: 'internal error' }), true);
          else res.destroy();
        });
      },
    );
    server.on('connection', (socket: Socket) => this.admitConnection(socket));
    // Malformed HTTP: answer 400 if the socket still can, never let it reach 'error'.
    server.on('clientError', (_err, socket) => {
      if (socket.writable)
        socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      else socket.destroy();
    });
    const port = await listenHttpServer(server, this.requestedPort, this.host);
    server.on('error', (err) =>
      this.log.error({ code: 'E_OTEL_COLLECTOR_SERVER', err }, 'otel collector server error'),
    );
    this.server = server;
    this.log.info({ code: 'OTEL_COLLECTOR_STARTED', host: this.host, port }, 'otel collector listening');
    return { port };
  }

  /** Stops accepting, lets in-flight requests finish (up to a grace period), then closes every socket. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    await closeHttpServer(server, STOP_GRACE_MS);
    await this.decoder.close();
  }

  /** A new token for a case; its telemetry is stored under that case whatever it claims. */
  issueToken(c: CaseAttribution): string {
    const parsed = caseSchema.parse(c);
    const token = randomBytes(24).toString('base64url');
    this.cases.set(token, parsed);
    return token;
  }

  /**
   * A token another worker issued, taken over with the case whose container carries it (a retry
   * adopting the container of a killed worker): its posts are stored under `c` from now on.
   */
  adoptToken(token: string, c: CaseAttribution): void {
    this.cases.set(token, caseSchema.parse(c));
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

  /**
   * For the mock gateway: an OTel post it intercepted for the case holding `token`, answered as
   * the collector would answer it directly.
   */
  async ingestForCase(token: string, req: OtelIngestRequest): Promise<OtelIngestResponse> {
    return this.track(this.ingestForCaseNow(token, req));
  }

  private async ingestForCaseNow(token: string, req: OtelIngestRequest): Promise<OtelIngestResponse> {
    const path = pathOf(req.path) ?? req.path;
    const signal = signalForPath(path);
    const attribution = this.cases.get(token);
    if (!attribution) return this.rejected(new IngestRejection(403, 'unknown ingest token'), path, 'gateway');
    if (signal === null)
      return this.rejected(new IngestRejection(404, 'not an OTLP ingest path'), path, 'gateway');
    let plan: BodyPlan;
    try {
      plan = bodyPlan(req.headers, this.anyContentType);
    } catch (err) {
      return this.rejected(err as IngestRejection, path, 'gateway', attribution);
    }
    const busy = this.busy(path, 'gateway');
    if (busy) return busy;
    this.inFlight++;
    try {
      return await this.ingest(signal, path, attribution, plan, req, false, 'gateway');
    } finally {
      this.inFlight--;
    }
  }

  // -------------------------------------------------------------------------------------------

  /** Beyond MAX_CONNECTIONS_PER_SOURCE a source's new connections are closed at once. */
  private admitConnection(socket: Socket): void {
    const source = normalizeIp(socket.remoteAddress ?? '');
    const open = (this.connectionsBySource.get(source) ?? 0) + 1;
    if (open > MAX_CONNECTIONS_PER_SOURCE) {
      socket.destroy();
      return;
    }
    this.connectionsBySource.set(source, open);
    socket.once('close', () => {
      const left = (this.connectionsBySource.get(source) ?? 1) - 1;
      if (left > 0) this.connectionsBySource.set(source, left);
      else this.connectionsBySource.delete(source);
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const remote = normalizeIp(req.socket.remoteAddress ?? '');
    const path = pathOf(req.url ?? '/');
    const signal = path === null ? null : signalForPath(path);
    if (path === null || signal === null) {
      this.refuseUnread(
        req,
        res,
        this.rejected(new IngestRejection(404, 'not an OTLP ingest path'), req.url ?? '', remote),
      );
      return;
    }
    let admitted: { attribution: CaseAttribution | null; plan: BodyPlan };
    try {
      admitted = this.admit(req, remote);
    } catch (err) {
      if (!(err instanceof IngestRejection)) throw err;
      const response = this.rejected(err, path, remote);
      if (err.status === 405) response.headers.allow = 'POST';
      this.refuseUnread(req, res, response);
      return;
    }
    const { attribution, plan } = admitted;
    const early = this.busy(path, remote) ?? this.sourceBusy(path, remote);
    if (early) {
      this.refuseUnread(req, res, early);
      return;
    }
    // Counted from before the body is read: the limits bound the memory bodies take, too.
    this.inFlight++;
    this.inFlightBySource.set(remote, (this.inFlightBySource.get(remote) ?? 0) + 1);
    try {
      const guard =
        plan.format === 'json' && !plan.gzip
          ? new JsonShapeGuard(MAX_DOCUMENT_DEPTH, MAX_DOCUMENT_CONTAINERS)
          : null;
      const body = await this.readBody(req, guard);
      if (body instanceof IngestRejection) {
        this.send(res, this.rejected(body, path, remote, attribution), true);
        this.discardRest(req);
        return;
      }
      if (body === 'aborted') return;
      this.send(
        res,
        await this.ingest(
          signal,
          path,
          attribution,
          plan,
          { path, headers: req.headers, body },
          guard !== null,
          remote,
        ),
      );
    } finally {
      this.inFlight--;
      const left = (this.inFlightBySource.get(remote) ?? 1) - 1;
      if (left > 0) this.inFlightBySource.set(remote, left);
      else this.inFlightBySource.delete(remote);
    }
  }

  /**
   * Everything decided from the request line and headers, before any body byte is read: method,
   * who sends it (token, else a bound container address, else only if untokened ingest is
   * allowed), content type and encoding, declared size.
   */
  private admit(
    req: http.IncomingMessage,
    remote: string,
  ): { attribution: CaseAttribution | null; plan: BodyPlan } {
    if (req.method !== 'POST') throw new IngestRejection(405, 'method not allowed');
    const token = headerText(req.headers, INGEST_TOKEN_HEADER);
    let attribution: CaseAttribution | null;
    if (token !== '') {
      attribution = this.cases.get(token) ?? null;
      if (!attribution) throw new IngestRejection(403, 'unknown ingest token');
    } else {
      const bound = this.sources.get(remote);
      attribution = bound === undefined ? null : (this.cases.get(bound) ?? null);
      if (!attribution && !this.allowUntokened)
        throw new IngestRejection(
          401,
          `no ingest token (${INGEST_TOKEN_HEADER}) and the source is not a live case's container`,
        );
    }
    const plan = bodyPlan(req.headers, this.anyContentType);
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > this.maxBodyBytes)
      throw new IngestRejection(413, `body exceeds ${this.maxBodyBytes} bytes`);
    return { attribution, plan };
  }

  /** 503 (clients retry) while MAX_CONCURRENT_INGESTS requests are being read, decoded or stored. */
  private busy(path: string, origin: string): OtelIngestResponse | null {
    if (this.inFlight < MAX_CONCURRENT_INGESTS) return null;
    const response = this.rejected(new IngestRejection(503, 'collector busy, retry'), path, origin);
    return { ...response, headers: { ...response.headers, 'retry-after': '1' } };
  }

  /** 429 while this source has MAX_INGESTS_PER_SOURCE requests in progress. */
  private sourceBusy(path: string, remote: string): OtelIngestResponse | null {
    if ((this.inFlightBySource.get(remote) ?? 0) < MAX_INGESTS_PER_SOURCE) return null;
    const response = this.rejected(
      new IngestRejection(429, `more than ${MAX_INGESTS_PER_SOURCE} concurrent requests from this source`),
      path,
      remote,
    );
    return { ...response, headers: { ...response.headers, 'retry-after': '1' } };
  }

  /** Answers without reading the body; the connection closes after the answer. */
  private refuseUnread(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    response: OtelIngestResponse,
  ): void {
    this.send(res, response, true);
    this.discardRest(req);
  }

  /**
   * Reads (and drops) at most REFUSED_BODY_READ_BYTES more of a refused request, so a client that
   * sends its body before reading the answer still gets it, then closes the connection.
   */
  private discardRest(req: http.IncomingMessage): void {
    if (req.complete) return;
    let seen = 0;
    const close = () => {
      clearTimeout(timer);
      req.socket.destroy();
    };
    const timer = setTimeout(close, REFUSED_BODY_LINGER_MS);
    timer.unref();
    req.on('data', (chunk: Buffer) => {
      seen += chunk.length;
      if (seen > REFUSED_BODY_READ_BYTES) close();
    });
    req.on('end', () => clearTimeout(timer));
    req.on('error', () => clearTimeout(timer));
    // readBody paused it; a data listener alone does not resume a paused stream.
    req.resume();
  }

  /**
   * The whole body within BODY_READ_TIMEOUT_MS and maxBodyBytes, each chunk passed through the
   * JSON shape guard as it arrives; a rejection as soon as one of them is exceeded.
   */
  private readBody(
    req: http.IncomingMessage,
    guard: JsonShapeGuard | null,
  ): Promise<Buffer | IngestRejection | 'aborted'> {
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let total = 0;
      let settled = false;
      const finish = (outcome: Buffer | IngestRejection | 'aborted') => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        req.off('data', onData);
        req.pause();
        resolve(outcome);
      };
      const timer = setTimeout(
        () => finish(new IngestRejection(408, `body not received within ${BODY_READ_TIMEOUT_MS} ms`)),
        BODY_READ_TIMEOUT_MS,
      );
      const onData = (chunk: Buffer) => {
        total += chunk.length;
        if (total > this.maxBodyBytes) {
          finish(new IngestRejection(413, `body exceeds ${this.maxBodyBytes} bytes`));
          return;
        }
        try {
          guard?.write(chunk);
        } catch (err) {
          if (err instanceof JsonShapeError) finish(new IngestRejection(400, err.message));
          else throw err;
          return;
        }
        chunks.push(chunk);
      };
      req.on('data', onData);
      req.once('end', () => {
        try {
          guard?.end();
        } catch (err) {
          finish(new IngestRejection(400, (err as Error).message));
          return;
        }
        finish(Buffer.concat(chunks, total));
      });
      req.once('aborted', () => finish('aborted'));
      req.once('error', () => finish('aborted'));
      req.once('close', () => {
        if (!req.complete) finish('aborted');
      });
    });
  }

  private async ingest(
    signal: OtelSignal,
    path: string,
    attribution: CaseAttribution | null,
    plan: BodyPlan,
    req: OtelIngestRequest,
    shapeChecked: boolean,
    origin: string,
  ): Promise<OtelIngestResponse> {
    const startedAt = Date.now();
    try {
      const decoded = await this.decoder.decode({
        signal,
        body: req.body,
        format: plan.format,
        gzip: plan.gzip,
        shapeChecked,
        maxBodyBytes: this.maxBodyBytes,
        extras: correlationFromHeaders(req.headers),
        attribution,
      });
      if (!decoded.ok) throw new IngestRejection(decoded.status, decoded.reason);
      const inserted = await this.store(decoded, attribution);
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
      throw err;
    }
  }

  /** Stores rows already attributed to their case, or refuses unattributed claims. */
  private async store(decoded: OtlpEncodedRows, attribution: CaseAttribution | null): Promise<number> {
    if (!attribution && decoded.records > 0 && !this.allowUntokened) {
      const claimed = decoded.claimedRunCaseId;
      throw new IngestRejection(
        403,
        claimed === null
          ? `no ingest token (${INGEST_TOKEN_HEADER}) and untokened ingest is disabled`
          : `body claims run case ${claimed} without its ingest token (${INGEST_TOKEN_HEADER})`,
      );
    }
    try {
      await copyRows(this.pool, decoded.signal, decoded.copyText);
      return decoded.records;
    } catch (err) {
      this.log.error(
        { code: 'E_OTEL_INGEST_FAILED', rows: decoded.records, err },
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
          path: path.slice(0, 200),
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
