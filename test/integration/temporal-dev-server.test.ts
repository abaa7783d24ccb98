import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { SA } from '../../src/domain/search-attributes';
import {
  ensureTemporalDevServer,
  findTemporalBinary,
  isLoopbackAddress,
} from '../../src/temporal/dev-server';
import { DevServerError } from '../../src/temporal/errors';

// A dev server of its own on a free port with a temp db: the shared one on 7233 is never touched.
const SHARED_PORT = 7233;

function listenOnce(port: number): Promise<number | null> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(null));
    server.listen(port, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : null));
    });
  });
}

/** A free port whose +1000 (the Web UI) is free too. */
async function freePortPair(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = await listenOnce(0);
    if (port && port !== SHARED_PORT && port + 1000 <= 65535 && (await listenOnce(port + 1000)) !== null)
      return port;
  }
  throw new Error('no free port pair');
}

/** Pids of processes whose command line mentions `needle` (Linux /proc). */
function pidsWithArg(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (args.includes(needle)) pids.push(Number(entry));
    } catch {
      // The process ended between readdir and read.
    }
  }
  return pids;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(what: string, ms: number, check: () => boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('Temporal dev server (src/temporal/dev-server.ts)', () => {
  let port = 0;
  let stateDir = '';
  let address = '';
  let pid: number | undefined;

  /** ensureTemporalDevServer for this file's server, collecting what it says. */
  const ensureOurs = (lines: string[], timeoutMs = 20_000) =>
    ensureTemporalDevServer({
      address,
      namespace: 'default',
      stateDir,
      timeoutMs,
      say: (l) => lines.push(l),
    });

  before(async () => {
    port = await freePortPair();
    address = `127.0.0.1:${port}`;
    stateDir = mkdtempSync(path.join(tmpdir(), 'agentbench-devserver-'));
  });

  after(async () => {
    // By pid, the one this file started: never the shared server.
    if (pid !== undefined && alive(pid)) {
      process.kill(pid, 'SIGTERM');
      await until('the dev server to stop', 20_000, () => !alive(pid as number)).catch(() =>
        process.kill(pid as number, 'SIGKILL'),
      );
    }
    rmSync(stateDir, { recursive: true, force: true });
  });

  test(
    'starts a detached dev server with our search attributes when none answers',
    { timeout: 90_000 },
    async () => {
      assert.notEqual(port, SHARED_PORT);
      const lines: string[] = [];
      const outcome = await ensureOurs(lines, 60_000);
      assert.ok(outcome.started, 'it says it started one');
      pid = outcome.started.pid;
      assert.ok(alive(pid));
      assert.equal(outcome.started.logFile, path.join(stateDir, 'logs', 'temporal.log'));
      assert.ok(existsSync(outcome.started.logFile));
      assert.equal(outcome.uiUrl, `http://127.0.0.1:${port + 1000}`);
      assert.deepEqual(outcome.registered, [], 'the start flags registered every attribute');
      assert.equal(lines.length, 1, lines.join('\n'));
      assert.match(
        lines[0] ?? '',
        new RegExp(
          `starting the Temporal dev server on ${address}.*log ${outcome.started.logFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`,
        ),
      );

      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      assert.ok(args.includes(path.join(stateDir, 'temporal.db')), args.join(' '));
      assert.ok(args.includes('system.enableActivityEagerExecution=true'), args.join(' '));

      const connection = await Connection.connect({ address, connectTimeout: 10_000 });
      try {
        const { customAttributes } = await connection.operatorService.listSearchAttributes({
          namespace: 'default',
        });
        const expected: Record<string, number> = { KEYWORD: 2, INT: 3 };
        for (const key of Object.values(SA)) {
          assert.equal(
            customAttributes?.[key.name],
            expected[key.type],
            `${key.name} is registered as ${key.type}`,
          );
        }
      } finally {
        await connection.close();
      }
    },
  );

  test('a second ensure reuses the running server: no second process', { timeout: 30_000 }, async () => {
    assert.ok(pid !== undefined, 'needs the server of the previous test');
    const lines: string[] = [];
    const outcome = await ensureOurs(lines);
    assert.equal(outcome.started, null);
    assert.deepEqual(outcome.registered, []);
    assert.deepEqual(lines, []);
    assert.deepEqual(pidsWithArg(path.join(stateDir, 'temporal.db')), [pid]);
  });

  test(
    'attributes missing on a running server (an older db file) are registered',
    { timeout: 30_000 },
    async () => {
      assert.ok(pid !== undefined, 'needs the server of the first test');
      const connection = await Connection.connect({ address, connectTimeout: 10_000 });
      try {
        await connection.operatorService.removeSearchAttributes({
          namespace: 'default',
          searchAttributes: [SA.casesFailed.name],
        });
        const lines: string[] = [];
        const outcome = await ensureOurs(lines);
        assert.equal(outcome.started, null);
        assert.deepEqual(outcome.registered, [SA.casesFailed.name]);
        assert.match(lines.join('\n'), /registered search attributes CasesFailed/);
        const { customAttributes } = await connection.operatorService.listSearchAttributes({
          namespace: 'default',
        });
        assert.equal(customAttributes?.[SA.casesFailed.name], 3, 'Int again');
      } finally {
        await connection.close();
      }
    },
  );

  test(
    'a non-loopback address that does not answer is refused, not started',
    { timeout: 10_000 },
    async () => {
      assert.equal(isLoopbackAddress('127.0.0.1:7233'), true);
      assert.equal(isLoopbackAddress('localhost:7300'), true);
      assert.equal(isLoopbackAddress('temporal.prod.internal:7233'), false);
      assert.equal(isLoopbackAddress('127.0.0.1'), false);
      // TEST-NET-1 (RFC 5737): never routed, so nothing answers there.
      await assert.rejects(
        ensureTemporalDevServer({
          address: '192.0.2.1:7233',
          namespace: 'default',
          stateDir,
          timeoutMs: 5000,
        }),
        (err: unknown) => {
          assert.ok(err instanceof DevServerError, String(err));
          assert.equal(err.reason, 'not-loopback');
          assert.match(
            err.message,
            /does not answer at 192\.0\.2\.1:7233.*only for a loopback address \(127\.0\.0\.1 or localhost\)/,
          );
          return true;
        },
      );
    },
  );

  test('a server that dies on start fails at once, pointing at its log', { timeout: 20_000 }, async () => {
    const otherPort = await freePortPair();
    const started = Date.now();
    await assert.rejects(
      ensureTemporalDevServer({
        address: `127.0.0.1:${otherPort}`,
        namespace: 'default',
        stateDir,
        binary: '/bin/false',
        timeoutMs: 60_000,
      }),
      (err: unknown) => {
        assert.ok(err instanceof DevServerError, String(err));
        assert.equal(err.reason, 'start-failed');
        assert.match(err.message, /exited with code 1, see .*temporal\.log/);
        return true;
      },
    );
    assert.ok(Date.now() - started < 10_000, 'no waiting for the deadline');
  });

  test('the binary is found on PATH first', () => {
    const bin = mkdtempSync(path.join(tmpdir(), 'agentbench-bin-'));
    try {
      const fake = path.join(bin, 'temporal');
      writeFileSync(fake, '#!/bin/sh\n');
      chmodSync(fake, 0o755);
      assert.equal(findTemporalBinary({ PATH: `/nonexistent${path.delimiter}${bin}` }), fake);
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });
});
