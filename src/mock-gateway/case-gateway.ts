import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import type { Logger } from '../logger';
import type Dockerode from 'dockerode';
import type { IsolatedNetwork } from '../docker/isolated-network';
import type { MockConfig, MockRule } from '../domain/message';
import {
  handlerResponseHead,
  interceptsHttpsOrigin,
  JSON_CONTENT_TYPE,
  matchRule,
  renderStaticResponse,
  ruleLabel,
  splitUrl,
} from '../domain/mock-rules';
import type { CertificateAuthority } from './certificate-authority';
import { PythonHandlerError, PythonHandlerPool, type PythonHandlerPoolOptions } from './python-handler-pool';

/**
 * The mock gateway of CONTRACT §5, one per case: its own HTTP/1.1 listener on an ephemeral port,
 * so cases with different mock configs run side by side (the original shared port 14318 and
 * failed whole batches with E_MOCK_GATEWAY_CONFIG_CONFLICT, §13.7). The container reaches it as
 * an HTTP(S) proxy (proxyEnv) and as `{{mock.base_url}}` (baseUrl). Handling order, per §5.3:
 *  1. CONNECT: decrypted with a leaf certificate of our CA when a rule targets that https origin
 *     (interceptsHttpsOrigin), then its requests go through 2–5 like plain ones; otherwise a plain
 *     TCP tunnel, or `502 CONNECT disabled by mock config` without passthrough.
 *  2. POST /api/otel/v1/{traces,logs} (any Host, also absolute-URI proxy requests) → otelForward.
 *  3. The first matching rule (json, text, python).
 *  4. No rule and no passthrough → 404 {"ok":false,"error":"no_mock_rule"}.
 *  5. No rule → forwarded to the absolute URL (30 s, hop-by-hop headers stripped).
 * Request bodies may be chunked; responses are written with Content-Length.
 *
 * Only its own case may use it (issue 15): a request or CONNECT from any other address is answered
 * 403 before its body is read, and is not recorded. On the case's own network (src/docker/
 * isolated-network) its own case is the network's addresses, known before the container starts;
 * a case on a network of its spec's choosing (`docker_network`) is known by its container's
 * addresses once it runs, and requests that arrive before then wait (at most ADMISSION_WAIT_MS).
 */

export interface OtelForwardRequest {
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** The container's address as the gateway sees it. */
  sourceIp: string;
}

interface OtelForwardResponse {
  status: number;
  headers?: Record<string, string>;
  body: Buffer;
}

export type OtelForward = (req: OtelForwardRequest) => Promise<OtelForwardResponse>;

export interface RecordedRequest {
  method: string;
  /** Absolute URL; for CONNECT the `host:port` target. */
  url: string;
  /** The answering rule's name (`rules[<i>]` when unnamed), or 'passthrough' | 'otel' | 'no_match' | 'connect'. */
  matched: string;
  status: number;
  latencyMs: number;
  /** ISO time the request arrived. */
  at: string;
}

export interface ContainerFile {
  path: string;
  content: string;
  mode: number;
}

export interface CaseGateway {
  port: number;
  /** `{{mock.base_url}}`: the gateway as the container reaches it. */
  baseUrl: string;
  /** CONTRACT §5.2 proxy env, plus CA env when rules may decrypt HTTPS; for `docker run` and every exec. */
  proxyEnv(): Record<string, string>;
  caCertPem: string;
  /** Files the container needs for the CA env of proxyEnv() (none when no HTTPS can be decrypted). */
  containerFiles(): ContainerFile[];
  requests(): RecordedRequest[];
  /** The case's container runs with these addresses: from now on they alone may use the gateway. */
  admit(addresses: string[]): void;
  close(): Promise<void>;
}

export interface MockGatewayManagerParams {
  log: Logger;
  ca: CertificateAuthority;
  otelForward: OtelForward;
  /** Interface the per-case listeners bind to when not sealed (e.g. docker0's address, 172.17.0.1). */
  bindHost: string;
  /** How containers name the host, e.g. host.docker.internal. */
  advertisedHost: string;
  /** Needed by python rules: each case's handlers run in a sandbox container of its own. */
  docker?: Dockerode;
  python?: Omit<PythonHandlerPoolOptions, 'log' | 'docker'>;
  /** Extra roots trusted when forwarding to https upstreams, on top of Node's bundled ones. */
  upstreamCaCerts?: string[];
}

/** Where the container finds our CA alone (NODE_EXTRA_CA_CERTS adds it to Node's roots). */
const CA_CERT_CONTAINER_PATH = '/benchmark/mock-gateway-ca.pem';
/**
 * Public roots plus our CA, for the variables that replace a client's trust store (SSL_CERT_FILE,
 * REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE): tunnels that are not decrypted must still verify. The public
 * roots are Node's bundled Mozilla set, so the file can be written at container creation without
 * reading the image; roots an image adds to its own store are not in it.
 */
const CA_BUNDLE_CONTAINER_PATH = '/benchmark/mock-gateway-ca-bundle.pem';

const OTEL_PATHS: ReadonlySet<string> = new Set(['/api/otel/v1/traces', '/api/otel/v1/logs']);
const FORWARD_TIMEOUT_MS = 30_000;
const CONNECT_TIMEOUT_MS = 10_000;
/** How long a request from an unknown address waits for the case's container to be admitted. */
const ADMISSION_WAIT_MS = 10_000;
const FOREIGN_SOURCE_BODY = JSON.stringify({ ok: false, error: "not this case's mock gateway" });
/** Bodies are buffered (rules and python see them whole); beyond this the answer is 413. */
const MAX_BODY_BYTES = 64 * 1024 * 1024;
/** The newest requests are kept; a chatty agent cannot grow the record without bound. */
const MAX_RECORDED_REQUESTS = 10_000;
/** §5.3 "minus Proxy-Connection and Connection", plus what must not cross a proxy or is re-framed here. */
const HOP_BY_HOP = new Set([
  'connection',
  'proxy-connection',
  'keep-alive',
  'proxy-authorization',
  'proxy-authenticate',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);
const ABSOLUTE_FORM = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//;

interface Answer {
  status: number;
  headers: Record<string, string | string[]>;
  body: Buffer;
}

function jsonAnswer(status: number, value: unknown, headers: Record<string, string> = {}): Answer {
  return {
    status,
    headers: { 'content-type': JSON_CONTENT_TYPE, ...headers },
    body: Buffer.from(JSON.stringify(value)),
  };
}

function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}

class BodyTooLargeError extends Error {}

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        req.removeAllListeners('data');
        req.resume();
        reject(new BodyTooLargeError(`request body exceeds ${MAX_BODY_BYTES} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
  });
}

function rawHeaderPairs(rawHeaders: readonly string[]): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2)
    pairs.push([rawHeaders[i] ?? '', rawHeaders[i + 1] ?? '']);
  return pairs;
}

/** Header pairs without hop-by-hop headers (and those the Connection header names), duplicates kept. */
function endToEndHeaders(rawHeaders: readonly string[]): Array<[string, string]> {
  const pairs = rawHeaderPairs(rawHeaders);
  const named = new Set(
    pairs
      .filter(([name]) => name.toLowerCase() === 'connection')
      .flatMap(([, value]) => value.split(',').map((token) => token.trim().toLowerCase())),
  );
  return pairs.filter(([name]) => !HOP_BY_HOP.has(name.toLowerCase()) && !named.has(name.toLowerCase()));
}

/** Pairs as a Node header object: first spelling of a name wins, repeated names become arrays. */
function headerObject(pairs: ReadonlyArray<[string, string]>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const spelling = new Map<string, string>();
  for (const [name, value] of pairs) {
    const key = spelling.get(name.toLowerCase());
    if (key === undefined) {
      spelling.set(name.toLowerCase(), name);
      out[name] = value;
    } else {
      const existing = out[key] ?? [];
      out[key] = [...(Array.isArray(existing) ? existing : [existing]), value];
    }
  }
  return out;
}

/** `host:port` of a CONNECT request; IPv6 literals in brackets. */
function parseConnectTarget(target: string): { hostname: string; port: number } | null {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:/\s]+)(?::(\d{1,5}))?$/.exec(target);
  if (!m?.[1]) return null;
  const port = m[2] === undefined ? 443 : Number(m[2]);
  if (port < 1 || port > 65535) return null;
  return { hostname: m[1], port };
}

interface TunnelInfo {
  /** Netloc as an https URL spells it: no port for 443. */
  netloc: string;
  sourceIp: string;
}

/** Which source addresses are the gateway's own case. */
class CaseSources {
  private addresses: Set<string> | null = null;
  private readonly waiters = new Set<() => void>();

  constructor(private readonly network: IsolatedNetwork | undefined) {}

  admit(addresses: string[]): void {
    this.addresses = new Set([...(this.addresses ?? []), ...addresses.map(plainIPv4)]);
    this.release();
  }

  /** Lets requests still waiting for the container's addresses fail now (the gateway closes). */
  release(): void {
    for (const wake of this.waiters) wake();
    this.waiters.clear();
  }

  async belongs(ip: string): Promise<boolean> {
    if (this.network) return this.network.contains(ip);
    if (this.addresses === null) {
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.waiters.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, ADMISSION_WAIT_MS);
        this.waiters.add(wake);
      });
    }
    return this.addresses?.has(plainIPv4(ip)) ?? false;
  }
}

/** Servers bound to IPv4 see IPv4 peers; a dual-stack one may report them IPv4-mapped. */
function plainIPv4(ip: string): string {
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}

class MockCaseGateway implements CaseGateway {
  readonly caCertPem: string;
  private readonly server: http.Server;
  /** Serves decrypted CONNECT streams; it never listens itself. */
  private readonly tlsServer: http.Server;
  private readonly sockets = new Set<net.Socket>();
  private readonly tunnels = new WeakMap<net.Socket, TunnelInfo>();
  private readonly recorded: RecordedRequest[] = [];
  private readonly mayDecrypt: boolean;
  private readonly sources: CaseSources;
  /** Foreign addresses already logged (once each, so a flood cannot flood the log). */
  private readonly foreignLogged = new Set<string>();
  private pool: PythonHandlerPool | null = null;
  private closing: Promise<void> | null = null;
  private listeningPort = 0;

  constructor(
    private readonly p: MockGatewayManagerParams & { caBundlePem: () => string },
    private readonly config: MockConfig,
    private readonly bindHost: string,
    private readonly advertisedHost: string,
    private readonly network: IsolatedNetwork | undefined,
    private readonly log: Logger,
  ) {
    this.sources = new CaseSources(network);
    this.caCertPem = p.ca.certPem;
    this.mayDecrypt = config.rules.length > 0;
    this.server = http.createServer((req, res) => this.serve(req, res, 'http'));
    this.tlsServer = http.createServer((req, res) => this.serve(req, res, 'https'));
    this.server.on('connection', (socket: net.Socket) => this.track(socket));
    this.server.on('connect', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) =>
      this.onConnect(req, socket, head),
    );
    for (const server of [this.server, this.tlsServer]) {
      server.on('clientError', (_err, socket: net.Socket) => {
        if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
        else socket.destroy();
      });
    }
  }

  get port(): number {
    return this.listeningPort;
  }

  get baseUrl(): string {
    return `http://${this.advertisedHost}:${this.listeningPort}`;
  }

  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host: this.bindHost, port: 0 }, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.listeningPort = (this.server.address() as net.AddressInfo).port;
    await this.network?.allowHostPort(this.port);
    this.log.info(
      {
        code: 'MOCK_GATEWAY_STARTED',
        endpoint: this.baseUrl,
        local_endpoint: `http://${this.bindHost}:${this.port}`,
        rules: this.config.rules.length,
        passthrough: this.config.passthrough,
        sealed: this.network?.sealed ?? false,
        network: this.network?.name,
      },
      'mock gateway started',
    );
  }

  proxyEnv(): Record<string, string> {
    const proxy = `http://${this.advertisedHost}:${this.port}`;
    // On a case network the advertised host is the network's gateway IP; host.docker.internal is
    // then left to the proxy (which intercepts OTel posts to it), whatever it resolves to.
    const noProxy = `127.0.0.1,localhost,${this.advertisedHost}`;
    const env: Record<string, string> = {
      HTTP_PROXY: proxy,
      HTTPS_PROXY: proxy,
      ALL_PROXY: proxy,
      http_proxy: proxy,
      https_proxy: proxy,
      all_proxy: proxy,
      NO_PROXY: noProxy,
      no_proxy: noProxy,
    };
    if (this.mayDecrypt) {
      env.SSL_CERT_FILE = CA_BUNDLE_CONTAINER_PATH;
      env.REQUESTS_CA_BUNDLE = CA_BUNDLE_CONTAINER_PATH;
      env.CURL_CA_BUNDLE = CA_BUNDLE_CONTAINER_PATH;
      env.NODE_EXTRA_CA_CERTS = CA_CERT_CONTAINER_PATH;
    }
    return env;
  }

  containerFiles(): ContainerFile[] {
    if (!this.mayDecrypt) return [];
    return [
      { path: CA_CERT_CONTAINER_PATH, content: this.caCertPem, mode: 0o644 },
      { path: CA_BUNDLE_CONTAINER_PATH, content: this.p.caBundlePem(), mode: 0o644 },
    ];
  }

  requests(): RecordedRequest[] {
    return [...this.recorded];
  }

  admit(addresses: string[]): void {
    this.sources.admit(addresses);
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      for (const socket of this.sockets) socket.destroy();
      this.sources.release();
      await closed;
      await this.pool?.close();
      this.log.debug({ code: 'MOCK_GATEWAY_CLOSED', requests: this.recorded.length }, 'mock gateway closed');
    })();
    return this.closing;
  }

  /** Whether the peer is this gateway's case; logs a foreign one once. */
  private async admitted(socket: net.Socket): Promise<boolean> {
    const ip = socket.remoteAddress ?? '';
    if (await this.sources.belongs(ip)) return true;
    if (!this.foreignLogged.has(ip) && this.foreignLogged.size < 100) {
      this.foreignLogged.add(ip);
      this.log.warn(
        { code: 'MOCK_GATEWAY_FOREIGN_SOURCE', source_ip: ip },
        "refused a client that is not this case's container (403, not recorded)",
      );
    }
    return false;
  }

  private track(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    if (this.closing) socket.destroy();
  }

  private record(entry: Omit<RecordedRequest, 'latencyMs' | 'at'>, startedAt: number): void {
    const full: RecordedRequest = {
      ...entry,
      latencyMs: Date.now() - startedAt,
      at: new Date(startedAt).toISOString(),
    };
    this.recorded.push(full);
    if (this.recorded.length > MAX_RECORDED_REQUESTS) this.recorded.shift();
    this.log.debug(
      {
        code: 'MOCK_GATEWAY_HTTP',
        method: full.method,
        url: full.url,
        matched: full.matched,
        status: full.status,
        latency_ms: full.latencyMs,
      },
      'mock gateway request',
    );
  }

  // -------------------------------------------------------------------------------------------
  // HTTP requests (plain, absolute-form proxy requests, and decrypted CONNECT streams)

  /** onRequest answers every failure itself; this only guards against a bug escaping it as an unhandled rejection. */
  private serve(req: http.IncomingMessage, res: http.ServerResponse, scheme: 'http' | 'https'): void {
    this.onRequest(req, res, scheme).catch((err: unknown) => {
      this.log.error(
        { code: 'E_MOCK_GATEWAY_REQUEST', url: req.url, err: describeError(err) },
        'mock gateway bug',
      );
      res.destroy();
    });
  }

  private async onRequest(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    scheme: 'http' | 'https',
  ): Promise<void> {
    const startedAt = Date.now();
    const method = (req.method ?? 'GET').toUpperCase();
    const tunnel = this.tunnels.get(req.socket);
    // A decrypted stream's source was admitted at its CONNECT.
    if (!tunnel && !(await this.admitted(req.socket))) {
      res.writeHead(403, {
        'content-type': JSON_CONTENT_TYPE,
        'content-length': String(Buffer.byteLength(FOREIGN_SOURCE_BODY)),
        connection: 'close',
      });
      res.end(FOREIGN_SOURCE_BODY);
      return;
    }
    const target = req.url ?? '/';
    const host = req.headers.host ?? tunnel?.netloc ?? `${this.advertisedHost}:${this.port}`;
    const url = ABSOLUTE_FORM.test(target)
      ? target
      : `${scheme}://${host}${target.startsWith('/') ? '' : '/'}${target}`;
    let matched = 'no_match';
    let answer: Answer;
    try {
      const body = await readBody(req);
      const path = splitUrl(url)?.path ?? '/';
      if (method === 'POST' && OTEL_PATHS.has(path)) {
        matched = 'otel';
        answer = await this.otel(req, url, path, body, tunnel?.sourceIp ?? req.socket.remoteAddress ?? '');
      } else {
        if (method === 'POST' && /otel|trace/i.test(path)) {
          this.log.info(
            { code: 'MOCK_GATEWAY_OTEL_CANDIDATE', method, url },
            'POST looks like telemetry but is not an OTel default path',
          );
        }
        const hit = matchRule(this.config.rules, { method, url });
        if (hit) {
          matched = ruleLabel(hit.rule, hit.index);
          answer = await this.ruleAnswer(hit.rule, matched, req, method, url, body);
        } else if (!this.config.passthrough) {
          answer = jsonAnswer(404, { ok: false, error: 'no_mock_rule' });
        } else {
          matched = 'passthrough';
          answer = await this.forward(req, method, url, body);
        }
      }
    } catch (err) {
      if (err instanceof BodyTooLargeError) answer = jsonAnswer(413, { ok: false, error: err.message });
      else {
        this.log.warn(
          { code: 'E_MOCK_GATEWAY_REQUEST', method, url, err: describeError(err) },
          'mock gateway request failed',
        );
        answer = jsonAnswer(500, { ok: false, error: describeError(err) });
      }
    }
    const status = this.write(res, method, answer);
    this.record({ method, url, matched, status }, startedAt);
  }

  /** Writes the answer with a Content-Length; an answer Node refuses (bad status/header) becomes a 500. */
  private write(res: http.ServerResponse, method: string, answer: Answer): number {
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(answer.headers)) {
      if (!HOP_BY_HOP.has(name.toLowerCase())) headers[name] = value;
    }
    const keepsLength =
      method === 'HEAD' && Object.keys(headers).some((k) => k.toLowerCase() === 'content-length');
    if (!keepsLength) {
      for (const name of Object.keys(headers))
        if (name.toLowerCase() === 'content-length') delete headers[name];
      headers['content-length'] = String(answer.body.length);
    }
    try {
      res.writeHead(answer.status, headers);
      res.end(answer.body);
      return answer.status;
    } catch (err) {
      if (res.headersSent) {
        res.destroy();
        return answer.status;
      }
      const fallback = jsonAnswer(500, { ok: false, error: `invalid mock response: ${describeError(err)}` });
      res.writeHead(fallback.status, { ...fallback.headers, 'content-length': String(fallback.body.length) });
      res.end(fallback.body);
      return fallback.status;
    }
  }

  private async otel(
    req: http.IncomingMessage,
    url: string,
    path: string,
    body: Buffer,
    sourceIp: string,
  ): Promise<Answer> {
    const fields = { method: req.method, url, content_length: body.length };
    try {
      const forwarded = await this.p.otelForward({ path, headers: req.headers, body, sourceIp });
      this.log.info(
        { code: 'MOCK_GATEWAY_OTEL_DEFAULT_HIT', ...fields, status: forwarded.status },
        'OTel default endpoint hit',
      );
      return {
        status: forwarded.status,
        headers: { 'x-mock-gateway': 'otel-default', ...forwarded.headers },
        body: forwarded.body,
      };
    } catch (err) {
      // §4.1: the agent always gets 200; a failed ingest is reported as nothing inserted.
      this.log.warn(
        { code: 'MOCK_GATEWAY_OTEL_INGEST_FAILED', ...fields, err: describeError(err) },
        'OTel ingest failed',
      );
      return jsonAnswer(
        200,
        { ok: true, mock: 'otel-default', inserted: 0 },
        { 'x-mock-gateway': 'otel-default' },
      );
    }
  }

  private async ruleAnswer(
    rule: MockRule,
    label: string,
    req: http.IncomingMessage,
    method: string,
    url: string,
    body: Buffer,
  ): Promise<Answer> {
    if (rule.response.type !== 'python') {
      const rendered = renderStaticResponse(rule.response);
      return { status: rendered.status, headers: rendered.headers, body: Buffer.from(rendered.body, 'utf8') };
    }
    try {
      if (!this.p.docker || !this.p.python)
        throw new PythonHandlerError(
          'E_MOCK_PYTHON_ERROR',
          'python rules need the Docker client and an image',
        );
      this.pool ??= new PythonHandlerPool({ log: this.log, docker: this.p.docker, ...this.p.python });
      const result = await this.pool.run(rule.response.python_code, {
        method,
        url,
        headers: rawHeaderPairs(req.rawHeaders),
        body,
      });
      const head = handlerResponseHead(rule.response, result);
      return { status: head.status, headers: head.headers, body: result.body };
    } catch (err) {
      if (!(err instanceof PythonHandlerError)) throw err;
      this.log.warn(
        { code: err.code, rule: label, method, url, err: err.message },
        'mock python handler failed',
      );
      return jsonAnswer(500, { ok: false, error: err.message, rule: label });
    }
  }

  /** §5.3 step 5: the absolute URL, directly (no upstream proxy), response buffered and relayed as is. */
  private forward(req: http.IncomingMessage, method: string, url: string, body: Buffer): Promise<Answer> {
    const scheme = splitUrl(url)?.scheme;
    if (scheme !== 'http' && scheme !== 'https') {
      return Promise.resolve(
        jsonAnswer(502, { ok: false, error: `cannot forward ${scheme ?? 'relative'} URL ${url}` }),
      );
    }
    const pairs = endToEndHeaders(req.rawHeaders).filter(([name]) => name.toLowerCase() !== 'content-length');
    const hadBody =
      req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
    if (hadBody || body.length > 0) pairs.push(['Content-Length', String(body.length)]);
    const ca =
      scheme === 'https' && this.p.upstreamCaCerts?.length
        ? [...tls.rootCertificates, ...this.p.upstreamCaCerts]
        : undefined;

    return new Promise((resolve) => {
      const fail = (err: unknown) => resolve(jsonAnswer(502, { ok: false, error: describeError(err) }));
      let upstream: http.ClientRequest;
      try {
        upstream = (scheme === 'https' ? https : http).request(
          url,
          {
            method,
            headers: headerObject(pairs),
            agent: false,
            ca,
            signal: AbortSignal.timeout(FORWARD_TIMEOUT_MS),
          },
          (res) => {
            const chunks: Buffer[] = [];
            let size = 0;
            res.on('data', (chunk: Buffer) => {
              size += chunk.length;
              if (size > MAX_BODY_BYTES)
                res.destroy(new Error(`upstream response exceeds ${MAX_BODY_BYTES} bytes`));
              else chunks.push(chunk);
            });
            res.once('error', fail);
            res.once('end', () =>
              resolve({
                status: res.statusCode ?? 502,
                headers: headerObject(endToEndHeaders(res.rawHeaders)),
                body: Buffer.concat(chunks),
              }),
            );
          },
        );
      } catch (err) {
        fail(err);
        return;
      }
      upstream.once('error', (err) =>
        fail(
          err.name === 'AbortError' || err.name === 'TimeoutError'
            ? new Error(`upstream timed out after ${FORWARD_TIMEOUT_MS} ms`)
            : err,
        ),
      );
      upstream.end(body);
    });
  }

  // -------------------------------------------------------------------------------------------
  // CONNECT

  private onConnect(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    this.admitted(socket)
      .then((ok) => {
        if (ok) this.handleConnect(req, socket, head);
        else
          socket.end(
            `HTTP/1.1 403 Forbidden\r\nContent-Type: ${JSON_CONTENT_TYPE}\r\n` +
              `Content-Length: ${Buffer.byteLength(FOREIGN_SOURCE_BODY)}\r\nConnection: close\r\n\r\n${FOREIGN_SOURCE_BODY}`,
          );
      })
      .catch((err: unknown) => this.connectFailed(req, socket, err));
  }

  /** A failed CONNECT must not reach (and crash) the worker. */
  private connectFailed(req: http.IncomingMessage, socket: net.Socket, err: unknown): void {
    this.log.warn(
      { code: 'E_MOCK_GATEWAY_REQUEST', method: 'CONNECT', url: req.url, err: describeError(err) },
      'CONNECT failed',
    );
    socket.destroy();
  }

  private handleConnect(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    const startedAt = Date.now();
    const targetText = req.url ?? '';
    const target = parseConnectTarget(targetText);
    const refuse = (status: number, reason: string) => {
      socket.end(
        `HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
          `Content-Length: ${Buffer.byteLength(reason)}\r\nConnection: close\r\n\r\n${reason}`,
      );
      this.record({ method: 'CONNECT', url: targetText, matched: 'connect', status }, startedAt);
    };
    if (!target) return refuse(400, 'Bad CONNECT target');
    const hostname = target.hostname.replace(/^\[|\]$/g, '');
    if (interceptsHttpsOrigin(this.config, hostname, target.port)) {
      this.decrypt(socket, head, hostname, target.port, req.socket.remoteAddress ?? '');
      this.record({ method: 'CONNECT', url: targetText, matched: 'connect', status: 200 }, startedAt);
      return;
    }
    if (!this.config.passthrough) return refuse(502, 'CONNECT disabled by mock config');
    this.tunnel(socket, head, hostname, target.port, targetText, startedAt);
  }

  /** TLS man-in-the-middle: the client's stream is answered by tlsServer with a leaf for its SNI name. */
  private decrypt(socket: net.Socket, head: Buffer, hostname: string, port: number, sourceIp: string): void {
    socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length > 0) socket.unshift(head);
    const tlsSocket = new tls.TLSSocket(socket, {
      isServer: true,
      secureContext: this.p.ca.secureContext(hostname),
      SNICallback: (servername, callback) => {
        try {
          callback(null, this.p.ca.secureContext(servername));
        } catch (err) {
          callback(err as Error, undefined);
        }
      },
      ALPNProtocols: ['http/1.1'],
    });
    const netloc = port === 443 ? hostname : `${hostname.includes(':') ? `[${hostname}]` : hostname}:${port}`;
    this.tunnels.set(tlsSocket, { netloc, sourceIp });
    this.track(tlsSocket);
    tlsSocket.on('error', (err) => {
      this.log.debug(
        { target: netloc, err: describeError(err) },
        'decrypted CONNECT stream failed (client may not trust the CA)',
      );
      tlsSocket.destroy();
    });
    this.tlsServer.emit('connection', tlsSocket);
  }

  /** §5.3 step 1: plain TCP relay, 10 s to connect, until either side closes. */
  private tunnel(
    socket: net.Socket,
    head: Buffer,
    hostname: string,
    port: number,
    targetText: string,
    startedAt: number,
  ): void {
    const upstream = net.connect({ host: hostname, port });
    this.track(upstream);
    let connected = false;
    upstream.setTimeout(CONNECT_TIMEOUT_MS, () => {
      if (!connected)
        upstream.destroy(new Error(`connect to ${targetText} timed out after ${CONNECT_TIMEOUT_MS} ms`));
    });
    upstream.once('connect', () => {
      connected = true;
      upstream.setTimeout(0);
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      socket.pipe(upstream);
      upstream.pipe(socket);
      this.record({ method: 'CONNECT', url: targetText, matched: 'connect', status: 200 }, startedAt);
    });
    upstream.on('error', (err) => {
      if (connected || !socket.writable) {
        socket.destroy();
        return;
      }
      const body = JSON.stringify({ ok: false, error: describeError(err) });
      socket.end(
        `HTTP/1.1 502 Bad Gateway\r\nContent-Type: ${JSON_CONTENT_TYPE}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
          `Connection: close\r\n\r\n${body}`,
      );
      this.record({ method: 'CONNECT', url: targetText, matched: 'connect', status: 502 }, startedAt);
    });
    upstream.once('close', () => socket.destroy());
    socket.once('close', () => upstream.destroy());
  }
}

/**
 * Starts and owns nothing shared: every case gets an independent gateway. One manager per worker
 * process holds what the gateways share (CA, OTel sink, bind/advertise addresses).
 */
export class MockGatewayManager {
  private caBundle: string | undefined;

  constructor(private readonly p: MockGatewayManagerParams) {}

  /**
   * `network`: the case's own network (src/docker/isolated-network), which the gateway listens on
   * and is advertised by; without one it listens on bindHost, advertised as advertisedHost.
   */
  async start(p: {
    runCaseId: number;
    config: MockConfig | null;
    network?: IsolatedNetwork;
  }): Promise<CaseGateway> {
    // §5.1: no mock_config = pass everything through (the gateway still serves OTel).
    const config: MockConfig = p.config ?? { passthrough: true, rules: [] };
    const log = this.p.log.child({ run_case_id: p.runCaseId });
    const gateway = new MockCaseGateway(
      {
        ...this.p,
        caBundlePem: () => (this.caBundle ??= `${tls.rootCertificates.join('\n')}\n${this.p.ca.certPem}`),
      },
      config,
      p.network?.gatewayIp ?? this.p.bindHost,
      p.network?.gatewayIp ?? this.p.advertisedHost,
      p.network,
      log,
    );
    try {
      await gateway.listen();
    } catch (err) {
      await gateway.close().catch(() => undefined);
      throw err;
    }
    return gateway;
  }
}
