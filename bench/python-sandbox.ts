/**
 * bench/python-sandbox — what the per-case sandbox container of `type: python` mock handlers costs
 * (issue 15 item 5) against the unsandboxed handler process of before, measured in the same run.
 *
 *   node --import tsx bench/python-sandbox.ts [--starts 10] [--requests 200] [--image bench/agent-base:bookworm]
 *
 * Start: a case's first python request, from nothing to its answer: PythonHandlerPool (create,
 * attach, start the container, python ready, one request) against spawning the same program
 * (src/mock-gateway/python-handler.py) as a local `python3 -I` over pipes and one request. Per
 * request: `requests` sequential requests of a trivial handler on a warm sandbox against the same on
 * the warm local process. Prints medians and p95, and the ratios. Starts alternate between the two.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import Dockerode from 'dockerode';
import { createLogger } from '../src/logger';
import { PythonHandlerPool, type PythonHandlerRequest } from '../src/mock-gateway/python-handler-pool';

const { values } = parseArgs({
  options: {
    starts: { type: 'string', default: '10' },
    requests: { type: 'string', default: '200' },
    image: { type: 'string', default: 'bench/agent-base:bookworm' },
  },
});
const STARTS = Number(values.starts);
const REQUESTS = Number(values.requests);
const PROGRAM = readFileSync(path.join(__dirname, '../src/mock-gateway/python-handler.py'), 'utf8');
const CODE = 'def handle(r):\n    return {"json": {"q": r["query"]}}';
const REQUEST: PythonHandlerRequest = {
  method: 'GET',
  url: 'http://api.test/v1/x?q=1',
  headers: [['Host', 'api.test']],
  body: Buffer.alloc(0),
};
const log = createLogger({ level: 'silent' });
const docker = new Dockerode({ socketPath: '/var/run/docker.sock' });

function percentile(xs: number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** The handler program as it ran before: a local process on pipes (no namespaces, no drop). */
class LocalHandler {
  private readonly child = spawn('python3', ['-I', '-c', PROGRAM, String(256 * 1024 * 1024), '7'], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8' },
  });
  private buffered = '';
  private readonly lines: string[] = [];
  private waiter: ((line: string) => void) | null = null;
  private nextId = 1;

  constructor() {
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (chunk: string) => {
      this.buffered += chunk;
      let nl: number;
      while ((nl = this.buffered.indexOf('\n')) >= 0) {
        const line = this.buffered.slice(0, nl);
        this.buffered = this.buffered.slice(nl + 1);
        const waiter = this.waiter;
        this.waiter = null;
        if (waiter) waiter(line);
        else this.lines.push(line);
      }
    });
  }

  private nextLine(): Promise<string> {
    const queued = this.lines.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  ready(): Promise<string> {
    return this.nextLine();
  }

  async run(): Promise<void> {
    const reply = this.nextLine();
    const request = { method: REQUEST.method, url: REQUEST.url, headers: REQUEST.headers, body_b64: '' };
    this.child.stdin.write(`${JSON.stringify({ id: this.nextId++, code: CODE, request })}\n`);
    const parsed = JSON.parse(await reply) as { ok: boolean };
    if (!parsed.ok) throw new Error('local handler failed');
  }

  close(): Promise<void> {
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin.end();
    return exited;
  }
}

async function timeMs(fn: () => Promise<unknown>): Promise<number> {
  const started = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - started) / 1e6;
}

function report(name: string, sandbox: number[], local: number[]): void {
  const row = (xs: number[]) =>
    `p50 ${percentile(xs, 50).toFixed(2)} ms, p95 ${percentile(xs, 95).toFixed(2)} ms`;
  console.log(`${name}: sandbox ${row(sandbox)} | local process ${row(local)}`);
  console.log(
    `${name}: ratio sandbox/local p50 ${(percentile(sandbox, 50) / percentile(local, 50)).toFixed(2)}x, ` +
      `extra p50 ${(percentile(sandbox, 50) - percentile(local, 50)).toFixed(2)} ms`,
  );
}

async function main(): Promise<void> {
  const startSandbox: number[] = [];
  const startLocal: number[] = [];
  for (let i = 0; i < STARTS; i++) {
    const pool = new PythonHandlerPool({ log, docker, image: values.image });
    startSandbox.push(await timeMs(() => pool.run(CODE, REQUEST)));
    await pool.close();
    const local = new LocalHandler();
    startLocal.push(
      await timeMs(async () => {
        await local.ready();
        await local.run();
      }),
    );
    await local.close();
  }
  report(`first request of a case (${STARTS} starts)`, startSandbox, startLocal);

  const pool = new PythonHandlerPool({ log, docker, image: values.image });
  const local = new LocalHandler();
  await pool.run(CODE, REQUEST);
  await local.ready();
  await local.run();
  const reqSandbox: number[] = [];
  const reqLocal: number[] = [];
  for (let i = 0; i < REQUESTS; i++) {
    reqSandbox.push(await timeMs(() => pool.run(CODE, REQUEST)));
    reqLocal.push(await timeMs(() => local.run()));
  }
  await Promise.all([pool.close(), local.close()]);
  report(`warm request (${REQUESTS} requests)`, reqSandbox, reqLocal);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
