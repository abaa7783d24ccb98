import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** How case containers reach a server of the test on the host. */
export const HOST_FROM_CONTAINER = 'host.docker.internal';

export interface LocalServer {
  /** As a case container reaches it. */
  url: string;
  requests: Array<{ path: string; body: string }>;
  close(): Promise<void>;
}

async function listen(
  handler: http.RequestListener,
  requests: LocalServer['requests'],
): Promise<LocalServer> {
  const sockets = new Set<Socket>();
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({ path: req.url ?? '/', body });
      (req as BodiedRequest).collectedBody = body;
      handler(req, res);
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  // Containers reach the host through the bridge gateway, not loopback.
  server.listen(0, '0.0.0.0');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${HOST_FROM_CONTAINER}:${port}`,
    requests,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A small web site: `/` and `/page/<n>` have text; `/never` accepts and never answers. */
export function startLocalSite(): Promise<LocalServer> {
  return listen((req, res) => {
    const path = req.url ?? '/';
    if (path === '/never') return; // the page that never loads
    const n = /^\/page\/(\d+)$/.exec(path)?.[1];
    const title = n ? `Page ${n}` : 'Local Shop';
    const body = n
      ? `<p id="text">This is page number ${n}.</p>`
      : '<h1>Welcome to the local shop</h1><p id="price">Price: 42 coins</p>';
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end(`<html><head><title>${title}</title></head><body>${body}</body></html>`);
  }, []);
}

interface ChatRequest {
  messages: Array<{ role: string; content: unknown }>;
}

/**
 * A scripted OpenAI-compatible chat endpoint. By the task's description: "garbage" → a body that
 * is not JSON; "never complete" → prose without a tool call, every time; otherwise the script
 * browser(goto <site>/page/<n>) → python_executor(print(n*n)) → complete_task("page <n>: <n*n>"),
 * where n is the first number in the description.
 */
export function startStubLlm(siteUrl: string): Promise<LocalServer> {
  return listen((req, res) => {
    const request = JSON.parse(requestsBody(req) || '{}') as ChatRequest;
    const user = String(request.messages.find((m) => m.role === 'user')?.content ?? '');
    const turn = request.messages.filter((m) => m.role === 'assistant').length;
    if (user.includes('garbage')) {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end('<<<this is not a chat completion>>>');
      return;
    }
    const n = Number(/\d+/.exec(user)?.[0] ?? '1');
    const call = (name: string, args: object) => ({
      id: `call-${turn}`,
      type: 'function',
      function: { name, arguments: JSON.stringify(args) },
    });
    const script = [
      call('browser', { action: 'goto', url: `${siteUrl}/page/${n}` }),
      call('python_executor', { code: `print(${n} * ${n})` }),
      call('complete_task', { result: `page ${n}: ${n * n}` }),
    ];
    const message = user.includes('never complete')
      ? { role: 'assistant', content: 'I am thinking about it.' }
      : { role: 'assistant', content: null, tool_calls: [script[Math.min(turn, 2)]] };
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(
      JSON.stringify({
        choices: [{ index: 0, message }],
        usage: { prompt_tokens: 11, completion_tokens: 7 },
      }),
    );
  }, []);
}

type BodiedRequest = http.IncomingMessage & { collectedBody?: string };

// The body was collected by `listen` before the handler runs.
function requestsBody(req: http.IncomingMessage): string {
  return (req as BodiedRequest).collectedBody ?? '';
}
