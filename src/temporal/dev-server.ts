import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, closeSync, constants, mkdirSync, openSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import { homedir } from 'node:os';
import path from 'node:path';
import { Connection, isGrpcServiceError } from '@temporalio/client';
import type { SearchAttributeType } from '@temporalio/common';
import { errorText } from '../domain/errors';
import { SA } from '../domain/search-attributes';
import { DevServerError } from './errors';
import { registerSearchAttributes, type IndexedValueType } from './search-attribute-registration';

/**
 * The local Temporal dev server (ARCHITECTURE §6 "Modes"): the one definition of how it is found,
 * started and made ready. `scripts/setup` (through scripts/temporal-dev-server.ts) and
 * `benchctl run`/`rerun` both call `ensureTemporalDevServer`, so the command line exists once.
 */

interface EnsureDevServerOptions {
  /** host:port of the frontend; the server is only ever started for 127.0.0.1 or localhost. */
  address: string;
  namespace: string;
  /** Holds temporal.db and logs/temporal.log (AGENTBENCH_STATE_DIR, as scripts/setup). */
  stateDir: string;
  /** Else found like scripts/setup always did: PATH, $GOBIN, $(go env GOPATH)/bin, ~/go/bin. */
  binary?: string;
  /** Until the server answers with our namespace; default 60 s. */
  timeoutMs?: number;
  /** One human line per thing done (start, search attributes registered). */
  say?: (line: string) => void;
}

interface DevServerOutcome {
  /** Null when a server already answered (or another process won the race to start one). */
  started: { pid: number; logFile: string } | null;
  uiUrl: string | null;
  /** Search attributes this call had to add (a server we did not start, or an older db file). */
  registered: string[];
}

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost']);
const DEFAULT_TIMEOUT_MS = 60_000;
const TCP_PROBE_TIMEOUT_MS = 2000;
const POLL_INTERVAL_MS = 250;
// gRPC status codes; @grpc/grpc-js is not a direct dependency, so no import for two numbers.
const GRPC_NOT_FOUND = 5;

/** `temporal server start-dev --search-attribute` spells the types this way. */
const CLI_TYPE_NAMES: Record<SearchAttributeType, string> = {
  TEXT: 'Text',
  KEYWORD: 'Keyword',
  INT: 'Int',
  DOUBLE: 'Double',
  BOOL: 'Bool',
  DATETIME: 'Datetime',
  KEYWORD_LIST: 'KeywordList',
};

function splitAddress(address: string): { host: string; port: number } | null {
  const match = /^(.+):(\d{1,5})$/.exec(address.trim());
  const port = Number(match?.[2]);
  if (!match?.[1] || !Number.isInteger(port) || port < 1 || port > 65535) return null;
  return { host: match[1], port };
}

/** True for the addresses a dev server may be started for: 127.0.0.1 or localhost, with a port. */
export function isLoopbackAddress(address: string): boolean {
  const parsed = splitAddress(address);
  return parsed !== null && LOOPBACK_HOSTS.has(parsed.host);
}

/** The Web UI listens on the frontend port + 1000, as `temporal server start-dev` does by default. */
function devServerUiPort(port: number): number {
  return port + 1000;
}

/** The dev server's command line (after the binary): the single copy of these flags. */
function devServerArgs(opts: { port: number; stateDir: string; namespace: string }): string[] {
  const args = [
    'server',
    'start-dev',
    '--ip',
    '127.0.0.1',
    '--port',
    String(opts.port),
    '--ui-port',
    String(devServerUiPort(opts.port)),
    '--db-filename',
    path.join(opts.stateDir, 'temporal.db'),
    '--log-level',
    'warn',
    // A worker that schedules an activity on its own task queue gets the task in the same round
    // trip: fewer hops between one case's end and the next case's start.
    '--dynamic-config-value',
    'system.enableActivityEagerExecution=true',
    // The history survives a process crash, and a history write no longer waits for an fsync.
    '--sqlite-pragma',
    'journal_mode=wal',
    '--sqlite-pragma',
    'synchronous=normal',
  ];
  // "default" always exists on a dev server; any other namespace must be asked for.
  if (opts.namespace !== 'default') args.push('--namespace', opts.namespace);
  for (const key of Object.values(SA))
    args.push('--search-attribute', `${key.name}=${CLI_TYPE_NAMES[key.type]}`);
  return args;
}

function isExecutableFile(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

function goBinDir(env: NodeJS.ProcessEnv): string | undefined {
  if (env.GOBIN) return env.GOBIN;
  try {
    // `go install` puts binaries in the first GOPATH entry's bin.
    const gopath = execFileSync('go', ['env', 'GOPATH'], {
      encoding: 'utf8',
      timeout: 10_000,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const first = gopath.trim().split(path.delimiter)[0];
    return first ? path.join(first, 'bin') : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Where `temporal` is: PATH, then where `go install` (what scripts/setup runs) puts it. Reads PATH
 * and GOBIN as the shell would; they locate a program, they do not configure this one.
 */
export function findTemporalBinary(env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (dir && isExecutableFile(path.join(dir, 'temporal'))) return path.join(dir, 'temporal');
  }
  const goBin = goBinDir(env);
  if (goBin && isExecutableFile(path.join(goBin, 'temporal'))) return path.join(goBin, 'temporal');
  const home = path.join(homedir(), 'go', 'bin', 'temporal');
  return isExecutableFile(home) ? home : undefined;
}

/** True when something accepts TCP connections there: a refused port answers in microseconds, unlike gRPC. */
function tcpAccepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), TCP_PROBE_TIMEOUT_MS);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/** A connection whose namespace answers, with the namespace's custom search attributes. */
async function connectReady(
  address: string,
  namespace: string,
  timeoutMs: number,
): Promise<{ connection: Connection; attributes: Record<string, IndexedValueType> }> {
  const connection = await Connection.connect({ address, connectTimeout: timeoutMs });
  try {
    const { customAttributes } = await connection.withDeadline(Date.now() + timeoutMs, () =>
      connection.operatorService.listSearchAttributes({ namespace }),
    );
    return { connection, attributes: customAttributes ?? {} };
  } catch (err) {
    await connection.close();
    throw err;
  }
}

function logTail(logFile: string): string {
  try {
    const lines = readFileSync(logFile, 'utf8').trimEnd().split('\n');
    return lines.slice(-8).join('\n');
  } catch {
    return '';
  }
}

interface Spawned {
  child: ChildProcess;
  logFile: string;
  exit: { code: number | null; signal: NodeJS.Signals | null; error?: Error } | null;
}

/** Detached, in its own session, output to the log: it outlives this process and its Ctrl-C. */
function spawnDetached(binary: string, args: string[], logFile: string): Spawned {
  mkdirSync(path.dirname(logFile), { recursive: true });
  // Append: a process that lost a start race must not truncate the winner's log.
  const fd = openSync(logFile, 'a');
  try {
    const child = spawn(binary, args, { detached: true, stdio: ['ignore', fd, fd] });
    const spawned: Spawned = { child, logFile, exit: null };
    child.once('exit', (code, signal) => (spawned.exit ??= { code, signal }));
    child.once('error', (error) => (spawned.exit ??= { code: null, signal: null, error }));
    child.unref();
    return spawned;
  } finally {
    closeSync(fd);
  }
}

/** Polls until the server answers with our namespace (or gives up at the deadline). */
async function waitUntilReady(
  address: string,
  host: string,
  port: number,
  namespace: string,
  deadline: number,
  spawned: Spawned | null,
): Promise<{ connection: Connection; attributes: Record<string, IndexedValueType> }> {
  let lastError: unknown = null;
  for (;;) {
    const accepting = await tcpAccepts(host, port);
    if (spawned?.exit && !accepting) {
      const { code, signal, error } = spawned.exit;
      const why = error ? errorText(error) : `exited with ${signal ?? `code ${String(code)}`}`;
      const tail = logTail(spawned.logFile);
      throw new DevServerError(
        `the Temporal dev server ${why}, see ${spawned.logFile}${tail ? `:\n${tail}` : ''}`,
        'start-failed',
      );
    }
    if (accepting) {
      try {
        return await connectReady(address, namespace, Math.max(1000, Math.min(5000, deadline - Date.now())));
      } catch (err) {
        lastError = err;
        // A server we did not just start is up: a missing namespace will not appear by waiting.
        if (!spawned && isGrpcServiceError(err) && err.code === GRPC_NOT_FOUND) {
          throw new DevServerError(
            `Temporal at ${address} has no namespace ${namespace}: ${err.details}`,
            'not-ready',
          );
        }
      }
    }
    if (Date.now() >= deadline) {
      const where = spawned ? `, see ${spawned.logFile}` : '';
      throw new DevServerError(
        `Temporal at ${address} did not answer in time${lastError ? ` (${errorText(lastError)})` : ''}${where}`,
        'not-ready',
      );
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
  }
}

/**
 * Makes Temporal answer at `address` with our search attributes: a server that already accepts
 * connections is used as it is (any address, as scripts/setup always did); otherwise, for a
 * loopback address only, the dev server is started detached so it outlives this process and
 * later runs reuse it.
 */
export async function ensureTemporalDevServer(opts: EnsureDevServerOptions): Promise<DevServerOutcome> {
  const target = splitAddress(opts.address);
  if (!target)
    throw new DevServerError(
      `TEMPORAL_ADDRESS ${JSON.stringify(opts.address)} is not host:port`,
      'not-ready',
    );
  const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const loopback = LOOPBACK_HOSTS.has(target.host);
  let spawned: Spawned | null = null;
  if (!(await tcpAccepts(target.host, target.port))) {
    if (!loopback) {
      throw new DevServerError(
        `Temporal does not answer at ${opts.address}; a dev server is started automatically only for a loopback address (127.0.0.1 or localhost): start that server, or unset TEMPORAL_ADDRESS to use a local one`,
        'not-loopback',
      );
    }
    const uiPort = devServerUiPort(target.port);
    if (uiPort > 65535)
      throw new DevServerError(
        `cannot start a dev server on port ${target.port}: its Web UI port ${uiPort} is out of range`,
        'start-failed',
      );
    const binary = opts.binary ?? findTemporalBinary();
    if (!binary) {
      throw new DevServerError(
        `Temporal does not answer at ${opts.address} and no 'temporal' binary was found (PATH, $GOBIN, $(go env GOPATH)/bin, ~/go/bin): npm run setup builds it with go install (needs Go), or put one from https://docs.temporal.io/cli on PATH`,
        'no-binary',
      );
    }
    const logFile = path.join(opts.stateDir, 'logs', 'temporal.log');
    mkdirSync(opts.stateDir, { recursive: true });
    spawned = spawnDetached(
      binary,
      devServerArgs({ port: target.port, stateDir: opts.stateDir, namespace: opts.namespace }),
      logFile,
    );
    opts.say?.(
      `starting the Temporal dev server on ${opts.address} (Web UI http://127.0.0.1:${uiPort}, log ${logFile}); it keeps running for later runs`,
    );
  }
  const { connection, attributes } = await waitUntilReady(
    opts.address,
    target.host,
    target.port,
    opts.namespace,
    deadline,
    spawned,
  );
  try {
    const { added: registered } = await registerSearchAttributes(connection, opts.namespace, attributes);
    if (registered.length > 0)
      opts.say?.(
        `registered search attributes ${registered.join(', ')} on ${opts.address} (namespace ${opts.namespace})`,
      );
    const pid = spawned?.child.pid;
    // Our child may have lost a start race to another process's server, which then answered.
    const started = spawned && !spawned.exit && pid !== undefined ? { pid, logFile: spawned.logFile } : null;
    return {
      started,
      uiUrl: loopback ? `http://127.0.0.1:${devServerUiPort(target.port)}` : null,
      registered,
    };
  } finally {
    await connection.close();
  }
}
