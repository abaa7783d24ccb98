import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ensureTemporalDevServer } from '../../src/temporal/dev-server';
import { freePort } from './ports';
import { processAlive, tcpAccepts, waitFor } from './process-wait';

/**
 * A Temporal dev server of one test's own: the `temporal` binary started by the product's own
 * ensureTemporalDevServer on a free port (its UI on port + 1000) with its SQLite file in a temp
 * dir, so a test can kill and restart it for real; the history survives the restart.
 */
export interface PrivateTemporal {
  address: string;
  port: number;
  /** SIGKILL by default (a crash); SIGTERM for a clean stop. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  start(): Promise<void>;
  destroy(): Promise<void>;
}

async function portPairFree(): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (port + 1000 <= 65535 && !(await tcpAccepts(port + 1000))) return port;
  }
}

export async function startPrivateTemporal(): Promise<PrivateTemporal> {
  const stateDir = await mkdtemp(path.join(tmpdir(), 'agentbench-temporal-'));
  const port = await portPairFree();
  const address = `127.0.0.1:${port}`;
  let pid: number | null = null;
  const start = async () => {
    const outcome = await ensureTemporalDevServer({
      address,
      namespace: 'default',
      stateDir,
      timeoutMs: 90_000,
    });
    if (!outcome.started) throw new Error(`something else answers at ${address}`);
    pid = outcome.started.pid;
  };
  const stop = async (signal: NodeJS.Signals = 'SIGKILL') => {
    const p = pid;
    if (p === null) return;
    process.kill(p, signal);
    await waitFor(`temporal dev server ${p} to exit`, () => !processAlive(p), 30_000);
    await waitFor(`port ${port} to close`, async () => !(await tcpAccepts(port)), 10_000);
    pid = null;
  };
  await start();
  return {
    address,
    port,
    start,
    stop,
    async destroy() {
      await stop().catch(() => undefined);
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}
