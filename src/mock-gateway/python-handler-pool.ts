import { type ChildProcess, execFile, spawn } from 'node:child_process';
import os from 'node:os';
import type { Logger } from '../logger';
import type { HandlerResultHead } from '../domain/mock-rules';

/**
 * Runs `type: python` mock rules (CONTRACT §2.5) in one long-lived `python3` process per gateway,
 * one request at a time over JSON lines on stdin/stdout. Unlike the original's in-process `exec`
 * (§5.4, §13.9) a handler has a deadline (the process is killed and respawned when it passes), an
 * address-space limit (RLIMIT_AS), no network, no worker environment (secrets), and when the worker
 * is root it runs as `nobody`. Every failure becomes a PythonHandlerError with a CONTRACT code.
 *
 * Network isolation, strongest available first (probed once per process):
 *  - `netns`: the process runs in an empty network namespace (`unshare --net`; as root, then
 *    `setpriv` drops to nobody). Only loopback exists and it is down: no socket reaches anything.
 *  - `socket-block`: `socket.socket`/`create_connection`/`getaddrinfo` raise before user code
 *    runs. Best effort only: code that imports `_socket` itself gets past it.
 */

export type NetworkIsolation = 'netns' | 'socket-block';

export interface PythonHandlerRequest {
  method: string;
  /** Absolute URL; the handler's scheme/host/path/query are derived from it with urllib, as the original did. */
  url: string;
  /** Raw header lines in order with their original casing; the dict keeps the last duplicate. */
  headers: Array<[string, string]>;
  body: Buffer;
}

export interface PythonHandlerResult extends HandlerResultHead {
  body: Buffer;
}

export type PythonHandlerErrorCode =
  | 'E_MOCK_PYTHON_EMPTY_CODE'
  | 'E_MOCK_PYTHON_MISSING_HANDLE'
  | 'E_MOCK_PYTHON_INVALID_RESULT'
  | 'E_MOCK_PYTHON_TIMEOUT'
  | 'E_MOCK_PYTHON_ERROR';

const ERROR_CODES: readonly PythonHandlerErrorCode[] = [
  'E_MOCK_PYTHON_EMPTY_CODE',
  'E_MOCK_PYTHON_MISSING_HANDLE',
  'E_MOCK_PYTHON_INVALID_RESULT',
  'E_MOCK_PYTHON_TIMEOUT',
  'E_MOCK_PYTHON_ERROR',
];

export class PythonHandlerError extends Error {
  constructor(
    readonly code: PythonHandlerErrorCode,
    detail?: string,
  ) {
    super(detail ? `${code}: ${detail}` : code);
    this.name = 'PythonHandlerError';
  }
}

export interface PythonHandlerPoolOptions {
  log: Logger;
  /** Interpreter on the worker host; looked up on SAFE_PATH. */
  executable?: string;
  timeoutMs?: number;
  memoryMb?: number;
  /** Forces the weaker isolation (for hosts where namespaces are unwanted); default: strongest available. */
  networkIsolation?: NetworkIsolation;
}

export const DEFAULT_PYTHON_TIMEOUT_MS = 5_000;
export const DEFAULT_PYTHON_MEMORY_MB = 256;
/** The handler process gets this PATH and nothing of the worker's environment. */
const SAFE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const NOBODY_ID = '65534';
const STARTUP_TIMEOUT_MS = 10_000;
const PROBE_TIMEOUT_MS = 3_000;
const STDERR_LOG_CHARS = 2_000;

/**
 * The handler process. Protocol: it prints `{"ready": true}` once, then answers every request
 * line `{"id", "code", "request": {method, url, headers: [[k, v]…], body_b64}}` with one line
 * `{"id", "ok": true, "status", "headers", "content_type", "body_b64"}` or
 * `{"id", "ok": false, "error": "E_MOCK_PYTHON_…: …"}`. The protocol runs on duplicates of
 * stdin/stdout; fds 0/1 of user code are /dev/null and stderr, so a handler's print() cannot
 * corrupt it.
 */
const HANDLER_PROCESS = String.raw`
import base64, builtins, json, os, re, resource, sys, time
from urllib.parse import parse_qs, urlsplit

memory_bytes, block_sockets = int(sys.argv[1]), sys.argv[2] == "socket-block"
if memory_bytes > 0:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
# No fork, no threads: a handler cannot leave processes behind that outlive its deadline.
resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))

proto_in = os.fdopen(os.dup(0), "r", encoding="utf-8")
proto_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
null_fd = os.open(os.devnull, os.O_RDONLY)
os.dup2(null_fd, 0)
os.dup2(2, 1)
sys.stdin = open(os.devnull, "r")
sys.stdout = sys.stderr

if block_sockets:
    import socket
    def _no_network(*args, **kwargs):
        raise PermissionError("network access is disabled for mock handlers")
    class _NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            _no_network()
    socket.socket = _NoSocket
    for _name in ("create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo", "gethostbyname", "gethostbyname_ex"):
        setattr(socket, _name, _no_network)

class HandlerError(Exception):
    pass

compiled = {}

def build_request(r):
    raw = base64.b64decode(r["body_b64"])
    parts = urlsplit(r["url"])
    headers = {}
    for name, value in r["headers"]:
        headers[name] = value
    return {
        "method": r["method"],
        "url": r["url"],
        "scheme": parts.scheme,
        "host": parts.netloc,
        "path": parts.path or "/",
        "query": parse_qs(parts.query, keep_blank_values=True),
        "headers": headers,
        "body_text": raw.decode("utf-8", errors="replace"),
        "body_bytes_b64": r["body_b64"],
    }

def run(msg):
    code = msg["code"]
    if not code.strip():
        raise HandlerError("E_MOCK_PYTHON_EMPTY_CODE")
    program = compiled.get(code)
    if program is None:
        program = compiled[code] = compile(code, "<mock_rule>", "exec")
    scope = {"__builtins__": builtins, "__name__": "mock_rule", "json": json, "re": re, "time": time}
    exec(program, scope)
    handle = scope.get("handle")
    if not callable(handle):
        raise HandlerError("E_MOCK_PYTHON_MISSING_HANDLE: define handle(request)")
    result = handle(build_request(msg["request"]))
    if not isinstance(result, dict):
        raise HandlerError("E_MOCK_PYTHON_INVALID_RESULT: handle(request) must return dict")
    status = result.get("status")
    if status:
        status = int(status)
        if not 100 <= status <= 599:
            raise HandlerError("E_MOCK_PYTHON_INVALID_RESULT: status must be between 100 and 599")
    else:
        status = None
    headers = result.get("headers") or {}
    if not isinstance(headers, dict):
        raise HandlerError("E_MOCK_PYTHON_INVALID_RESULT: headers must be a dict")
    content_type = None
    if "json" in result:
        body = json.dumps(result["json"], ensure_ascii=False).encode("utf-8")
        content_type = "application/json"
    elif "text" in result:
        body = str(result["text"]).encode("utf-8")
        content_type = "text/plain; charset=utf-8"
    elif "body_base64" in result:
        body = base64.b64decode(result["body_base64"] or b"")
    else:
        body = b""
    return {
        "status": status,
        "headers": {str(k): str(v) for k, v in headers.items()},
        "content_type": content_type,
        "body_b64": base64.b64encode(body).decode("ascii"),
    }

proto_out.write(json.dumps({"ready": True}) + "\n")
proto_out.flush()
for line in proto_in:
    msg = json.loads(line)
    try:
        reply = {"id": msg["id"], "ok": True, **run(msg)}
    except HandlerError as e:
        reply = {"id": msg["id"], "ok": False, "error": str(e)}
    except BaseException as e:  # user code may raise anything, SystemExit and MemoryError included
        reply = {"id": msg["id"], "ok": False, "error": "E_MOCK_PYTHON_ERROR: %s: %s" % (type(e).__name__, e)}
    try:
        line = json.dumps(reply)
    except BaseException as e:
        line = json.dumps({"id": msg["id"], "ok": False, "error": "E_MOCK_PYTHON_ERROR: %s: %s" % (type(e).__name__, e)})
    proto_out.write(line + "\n")
    proto_out.flush()
`;

interface Reply {
  id?: number;
  ready?: boolean;
  ok?: boolean;
  error?: string;
  status?: number | null;
  headers?: Record<string, string>;
  content_type?: string | null;
  body_b64?: string;
}

interface Pending {
  id: number;
  resolve: (reply: Reply) => void;
  reject: (err: PythonHandlerError) => void;
}

/** One running handler process and its line reader. */
class HandlerProcess {
  private buffered = '';
  private pending: Pending | null = null;
  private readyWaiter: { resolve: () => void; reject: (err: Error) => void } | null = null;
  private stderrTail = '';
  private killed = false;
  exited = false;

  constructor(
    readonly child: ChildProcess,
    private readonly log: Logger,
  ) {
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => this.onData(chunk));
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-STDERR_LOG_CHARS);
    });
    // Writes after the process died fail with EPIPE; the exit handler has already failed the request.
    child.stdin?.on('error', () => undefined);
    child.on('error', (err) => this.fail(`could not run the handler process: ${err.message}`));
    child.on('exit', (code, signal) => this.fail(`handler process exited (code ${code}, signal ${signal})`));
  }

  ready(): Promise<void> {
    return new Promise((resolve, reject) => (this.readyWaiter = { resolve, reject }));
  }

  send(id: number, line: string): Promise<Reply> {
    return new Promise((resolve, reject) => {
      if (!this.usable) {
        reject(new PythonHandlerError('E_MOCK_PYTHON_ERROR', 'handler process is not running'));
        return;
      }
      this.pending = { id, resolve, reject };
      this.child.stdin?.write(line + '\n');
    });
  }

  /** Stderr the handlers wrote since the last call (print() output, tracebacks of the process). */
  takeStderr(): string {
    const tail = this.stderrTail;
    this.stderrTail = '';
    return tail;
  }

  /** False once killed, even before the exit event arrives: the next request must get a fresh process. */
  get usable(): boolean {
    return !this.exited && !this.killed;
  }

  kill(): void {
    this.killed = true;
    if (this.exited || this.child.pid === undefined) return;
    try {
      // The process leads its own group: handler code that forked children dies with it.
      process.kill(-this.child.pid, 'SIGKILL');
    } catch {
      this.child.kill('SIGKILL');
    }
  }

  private onData(chunk: string): void {
    this.buffered += chunk;
    let newline: number;
    while ((newline = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, newline);
      this.buffered = this.buffered.slice(newline + 1);
      let reply: Reply;
      try {
        reply = JSON.parse(line) as Reply;
      } catch {
        this.log.warn({ line: line.slice(0, 200) }, 'mock python handler process wrote a non-protocol line');
        continue;
      }
      if (reply.ready) {
        this.readyWaiter?.resolve();
        this.readyWaiter = null;
      } else if (this.pending && reply.id === this.pending.id) {
        const { resolve } = this.pending;
        this.pending = null;
        resolve(reply);
      }
    }
  }

  private fail(detail: string): void {
    if (this.exited) return;
    this.exited = true;
    const stderr = this.takeStderr().trim();
    const message = stderr ? `${detail}; stderr: ${stderr.slice(-500)}` : detail;
    this.readyWaiter?.reject(new Error(message));
    this.readyWaiter = null;
    this.pending?.reject(new PythonHandlerError('E_MOCK_PYTHON_ERROR', message));
    this.pending = null;
  }
}

let isolationProbe: Promise<NetworkIsolation> | undefined;

function commandSucceeds(file: string, args: string[]): Promise<boolean> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: PROBE_TIMEOUT_MS, env: { PATH: SAFE_PATH } }, (err) =>
      resolve(err === null),
    );
  });
}

/** Whether this host lets us put a process into a fresh network namespace (as root, or via a user namespace). */
function strongestIsolation(): Promise<NetworkIsolation> {
  isolationProbe ??= (async () => {
    const args = isRoot() ? ['--net', '--', 'true'] : ['--map-root-user', '--net', '--', 'true'];
    return (await commandSucceeds('unshare', args)) ? 'netns' : 'socket-block';
  })();
  return isolationProbe;
}

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** Serialises requests onto one handler process, respawning it after a timeout or a crash. */
export class PythonHandlerPool {
  private process: HandlerProcess | null = null;
  private starting: Promise<HandlerProcess> | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private nextId = 1;
  private closed = false;
  private readonly executable: string;
  private readonly timeoutMs: number;
  private readonly memoryBytes: number;
  private isolationInUse: NetworkIsolation | undefined;

  constructor(private readonly options: PythonHandlerPoolOptions) {
    this.executable = options.executable ?? 'python3';
    this.timeoutMs = options.timeoutMs ?? DEFAULT_PYTHON_TIMEOUT_MS;
    this.memoryBytes = (options.memoryMb ?? DEFAULT_PYTHON_MEMORY_MB) * 1024 * 1024;
  }

  /** The isolation of the running (or last) handler process; undefined before the first request. */
  get isolation(): NetworkIsolation | undefined {
    return this.isolationInUse;
  }

  /** Runs `handle(request)` of `code`; requests queue behind each other, each with its own deadline. */
  run(code: string, request: PythonHandlerRequest): Promise<PythonHandlerResult> {
    const result = this.queue.then(() => this.runNow(code, request));
    this.queue = result.catch(() => undefined);
    return result;
  }

  async close(): Promise<void> {
    this.closed = true;
    const running = this.process ?? (await this.starting?.catch(() => null)) ?? null;
    this.process = null;
    if (running && !running.exited) {
      const exited = new Promise<void>((resolve) => running.child.once('exit', () => resolve()));
      running.kill();
      await exited;
    }
  }

  private async runNow(code: string, request: PythonHandlerRequest): Promise<PythonHandlerResult> {
    if (this.closed) throw new PythonHandlerError('E_MOCK_PYTHON_ERROR', 'mock gateway is closed');
    let handler: HandlerProcess;
    try {
      handler = await this.handlerProcess();
    } catch (err) {
      throw new PythonHandlerError(
        'E_MOCK_PYTHON_ERROR',
        `could not start python: ${(err as Error).message}`,
      );
    }
    const id = this.nextId++;
    const line = JSON.stringify({
      id,
      code,
      request: {
        method: request.method,
        url: request.url,
        headers: request.headers,
        body_b64: request.body.toString('base64'),
      },
    });

    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        handler.kill();
        reject(
          new PythonHandlerError(
            'E_MOCK_PYTHON_TIMEOUT',
            `handle(request) did not return within ${this.timeoutMs} ms`,
          ),
        );
      }, this.timeoutMs);
    });
    let reply: Reply;
    try {
      reply = await Promise.race([handler.send(id, line), deadline]);
    } finally {
      clearTimeout(timer);
      const stderr = handler.takeStderr();
      if (stderr) this.options.log.debug({ stderr }, 'mock python handler stderr');
    }
    if (!reply.ok) throw toHandlerError(reply.error);
    return {
      status: reply.status ?? null,
      headers: reply.headers ?? {},
      contentType: reply.content_type ?? null,
      body: Buffer.from(reply.body_b64 ?? '', 'base64'),
    };
  }

  private async handlerProcess(): Promise<HandlerProcess> {
    if (this.process?.usable) return this.process;
    this.starting ??= this.spawnHandler().finally(() => (this.starting = null));
    this.process = await this.starting;
    return this.process;
  }

  private async spawnHandler(): Promise<HandlerProcess> {
    const isolation = this.options.networkIsolation ?? (await strongestIsolation());
    const python = [this.executable, '-I', '-c', HANDLER_PROCESS, String(this.memoryBytes), isolation];
    let command: string[];
    if (isolation === 'socket-block') command = python;
    else if (isRoot()) {
      command = [
        'unshare',
        '--net',
        '--',
        'setpriv',
        `--reuid=${NOBODY_ID}`,
        `--regid=${NOBODY_ID}`,
        '--clear-groups',
        '--no-new-privs',
        '--',
        ...python,
      ];
    } else command = ['unshare', '--map-root-user', '--net', '--', ...python];

    const [file, ...args] = command as [string, ...string[]];
    const child = spawn(file, args, {
      cwd: os.tmpdir(),
      env: { PATH: SAFE_PATH, LANG: 'C.UTF-8', PYTHONDONTWRITEBYTECODE: '1' },
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true,
    });
    const handler = new HandlerProcess(child, this.options.log);
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        handler.ready(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no ready line within ${STARTUP_TIMEOUT_MS} ms`)),
            STARTUP_TIMEOUT_MS,
          );
        }),
      ]);
    } catch (err) {
      handler.kill();
      throw err;
    } finally {
      clearTimeout(timer);
    }
    this.isolationInUse = isolation;
    this.options.log.debug({ pid: child.pid, isolation }, 'mock python handler process started');
    return handler;
  }
}

function toHandlerError(error: string | undefined): PythonHandlerError {
  const text = error ?? 'E_MOCK_PYTHON_ERROR: handler process gave no reason';
  const code = ERROR_CODES.find((c) => text === c || text.startsWith(`${c}:`)) ?? 'E_MOCK_PYTHON_ERROR';
  const detail = text.startsWith(code) ? text.slice(code.length).replace(/^:\s*/, '') : text;
  return new PythonHandlerError(code, detail || undefined);
}
