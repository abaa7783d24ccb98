import http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A real HTTP server on loopback standing in for an LLM judge. Each path gets a script of
 * replies, consumed in order (the last one repeats); every request is recorded as received.
 */

export interface RecordedRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export type JudgeReply =
  | { status?: number; json: unknown }
  | { status?: number; text: string }
  /** Accept the request and never answer. */
  | 'hang';

export interface LlmJudgeServer {
  /** http://127.0.0.1:<port>; append a path to get a judge's base_url. */
  origin: string;
  requests: RecordedRequest[];
  requestsTo(path: string): RecordedRequest[];
  script(path: string, ...replies: JudgeReply[]): void;
  /** Hung requests whose connection the client has closed. */
  abandonedHangs(): number;
  close(): Promise<void>;
}

export const openAiReply = (content: string | null): unknown => ({
  id: 'chatcmpl-test',
  object: 'chat.completion',
  choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
});

export const anthropicReply = (text: string): unknown => ({
  id: 'msg-test',
  type: 'message',
  role: 'assistant',
  content: [{ type: 'text', text }],
  usage: { input_tokens: 10, output_tokens: 5 },
});

export async function startLlmJudgeServer(): Promise<LlmJudgeServer> {
  const requests: RecordedRequest[] = [];
  const scripts = new Map<string, JudgeReply[]>();
  let abandoned = 0;

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      requests.push({
        method: req.method ?? '',
        path,
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      });
      const script = scripts.get(path) ?? [];
      const reply = script.length > 1 ? script.shift() : script[0];
      if (reply === undefined) {
        res.writeHead(404, { 'Content-Type': 'application/json' }).end('{"error":"no script for this path"}');
      } else if (reply === 'hang') {
        res.on('close', () => {
          if (!res.writableEnded) abandoned++;
        });
      } else if ('json' in reply) {
        res
          .writeHead(reply.status ?? 200, { 'Content-Type': 'application/json' })
          .end(JSON.stringify(reply.json));
      } else {
        res.writeHead(reply.status ?? 200, { 'Content-Type': 'text/plain' }).end(reply.text);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    origin: `http://127.0.0.1:${port}`,
    requests,
    requestsTo: (path) => requests.filter((r) => r.path === path),
    script(path, ...replies) {
      scripts.set(path, replies);
    },
    abandonedHangs: () => abandoned,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
    },
  };
}
