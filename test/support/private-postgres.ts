import { execFile } from 'node:child_process';
import { chownSync, existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './ports';

const exec = promisify(execFile);

/**
 * A PostgreSQL server of one test's own (initdb in a temp dir, own port and socket directory), so
 * a test can stop and restart a database server for real without touching the shared one. Runs as
 * the `postgres` user when this process is root (the server refuses root).
 */
export interface PrivatePostgres {
  /** Superuser URL of the `postgres` database (trust auth on loopback): createTestDatabase's admin URL. */
  adminUrl: string;
  port: number;
  /** `immediate` (the default) is a crash (no checkpoint); `fast` disconnects clients and checkpoints. */
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
  start(): Promise<void>;
  destroy(): Promise<void>;
}

function postgresBinDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => existsSync(path.join(root, v, 'bin', 'pg_ctl')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  const newest = versions[0];
  if (!newest)
    throw new Error('no PostgreSQL server binaries under /usr/lib/postgresql (scripts/setup installs them)');
  return path.join(root, newest, 'bin');
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const bin = postgresBinDir();
  const dir = await mkdtemp(path.join(tmpdir(), 'agentbench-postgres-'));
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const { stdout } = await exec('id', ['-u', 'postgres']);
    const { stdout: gid } = await exec('id', ['-g', 'postgres']);
    chownSync(dir, Number(stdout.trim()), Number(gid.trim()));
  }
  const run = (program: string, args: string[]) =>
    asRoot
      ? exec('runuser', ['-u', 'postgres', '--', path.join(bin, program), ...args], { timeout: 60_000 })
      : exec(path.join(bin, program), args, { timeout: 60_000 });
  const data = path.join(dir, 'data');
  await run('initdb', ['-D', data, '-U', 'agentbench', '--auth=trust', '--no-sync', '-E', 'UTF8']);
  const port = await freePort();
  const options = [
    `-p ${port}`,
    `-k ${dir}`,
    "-c listen_addresses='127.0.0.1'",
    // Test data: speed over durability across an OS crash (a server crash keeps the WAL).
    '-c synchronous_commit=off',
    '-c max_connections=200',
  ].join(' ');
  let running = false;
  const start = async () => {
    await run('pg_ctl', [
      '-D',
      data,
      '-l',
      path.join(dir, 'server.log'),
      '-o',
      options,
      '-w',
      '-t',
      '60',
      'start',
    ]);
    running = true;
  };
  const stop = async (mode: 'fast' | 'immediate' = 'immediate') => {
    if (!running) return;
    await run('pg_ctl', ['-D', data, '-m', mode, '-w', '-t', '60', 'stop']);
    running = false;
  };
  await start();
  return {
    adminUrl: `postgres://agentbench@127.0.0.1:${port}/postgres`,
    port,
    stop,
    start,
    async destroy() {
      await stop('immediate').catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
