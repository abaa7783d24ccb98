import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import Dockerode from 'dockerode';
import type { Logger } from '../../src/logger';
import { AGENT_BASE, SOCKET_PATH } from './docker-fixtures';
import { parseMockConfig, type MockConfig } from '../../src/domain/message';
import { CertificateAuthority } from '../../src/mock-gateway/certificate-authority';
import {
  MockGatewayManager,
  type MockGatewayManagerParams,
  type OtelForwardRequest,
} from '../../src/mock-gateway/case-gateway';

/** What the echo upstream saw; it answers with exactly this as JSON. */
export interface EchoedRequest {
  method: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export interface Upstream {
  port: number;
  requests: EchoedRequest[];
  close(): Promise<void>;
}

function echoHandler(requests: EchoedRequest[]) {
  return (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const seen: EchoedRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      requests.push(seen);
      const status = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('status') ?? 200);
      res.writeHead(status, {
        'content-type': 'application/json',
        'x-upstream': 'echo',
        'set-cookie': ['a=1', 'b=2'],
      });
      res.end(JSON.stringify(seen));
    });
  };
}

async function listen(server: net.Server): Promise<number> {
  // 0.0.0.0: containers reach it through the docker0 address (and, sealed, must not).
  await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve));
  return (server.address() as net.AddressInfo).port;
}

function closer(server: http.Server): () => Promise<void> {
  return () =>
    new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
}

/** A plain HTTP upstream on the host that echoes every request. */
export async function startEchoUpstream(): Promise<Upstream> {
  const requests: EchoedRequest[] = [];
  const server = http.createServer(echoHandler(requests));
  return { port: await listen(server), requests, close: closer(server) };
}

/** An HTTPS echo upstream whose certificate (for `hostname`) is signed by `ca`, not by a public root. */
export async function startTlsEchoUpstream(ca: CertificateAuthority, hostname: string): Promise<Upstream> {
  const requests: EchoedRequest[] = [];
  const server = http.createServer(echoHandler(requests));
  // Clients that connect by IP send no SNI, so every connection gets the one leaf.
  const listener = net.createServer((raw) => {
    const socket = new tls.TLSSocket(raw, { isServer: true, secureContext: ca.secureContext(hostname) });
    socket.on('error', () => socket.destroy());
    server.emit('connection', socket);
  });
  const port = await listen(listener);
  return {
    port,
    requests,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => listener.close(() => resolve()));
    },
  };
}

/** The OTel sink of CONTRACT §4.1 as the ingest module answers; counts and keeps what it got. */
export function recordingOtelSink(inserted = 0) {
  const calls: OtelForwardRequest[] = [];
  return {
    calls,
    forward: async (req: OtelForwardRequest) => {
      calls.push(req);
      return {
        status: 200,
        headers: { 'content-type': 'application/json' },
        body: Buffer.from(JSON.stringify({ ok: true, mock: 'otel-default', inserted })),
      };
    },
  };
}

export function mockConfig(raw: unknown): MockConfig {
  const parsed = parseMockConfig(raw);
  if (!parsed) throw new Error('test mock config must be an object');
  return parsed;
}

let sharedCa: CertificateAuthority | undefined;
/** One CA per test process, like one per worker process. */
export function testCa(): CertificateAuthority {
  sharedCa ??= CertificateAuthority.generate();
  return sharedCa;
}

let sharedDocker: Dockerode | undefined;

/** Python rules run in sandbox containers of the agent-base image, as the worker's default. */
export function manager(log: Logger, overrides: Partial<MockGatewayManagerParams> = {}): MockGatewayManager {
  return new MockGatewayManager({
    log,
    ca: testCa(),
    otelForward: recordingOtelSink().forward,
    bindHost: '127.0.0.1',
    advertisedHost: '127.0.0.1',
    docker: (sharedDocker ??= new Dockerode({ socketPath: SOCKET_PATH })),
    python: { image: AGENT_BASE },
    ...overrides,
  });
}

export interface ProxiedResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A request to `port` whose target is `target` (absolute-form for proxy use, or a path). */
export function request(
  port: number,
  target: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string | Buffer; chunked?: boolean } = {},
): Promise<ProxiedResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method: opts.method ?? 'GET',
        path: target,
        headers: opts.headers,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (opts.body !== undefined && opts.chunked) {
      // Two writes without a Content-Length: Node sends Transfer-Encoding: chunked.
      const body = Buffer.from(opts.body);
      req.write(body.subarray(0, Math.floor(body.length / 2)));
      req.end(body.subarray(Math.floor(body.length / 2)));
    } else req.end(opts.body);
  });
}

/** Sends CONNECT and returns the proxy's status line and, for non-200, the body it sent before closing. */
export function connect(
  port: number,
  target: string,
): Promise<{ status: number; socket: net.Socket; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'CONNECT', path: target, agent: false });
    // Node reports every answer to CONNECT as 'connect'; a refusal's body follows on the socket until close.
    req.on('connect', (res: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      const status = res.statusCode ?? 0;
      if (status === 200) return resolve({ status, socket, body: '' });
      const chunks: Buffer[] = [head];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('close', () => resolve({ status, socket, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end();
  });
}
