import { randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { PassThrough, type Duplex } from 'node:stream';
import type Dockerode from 'dockerode';
import type { Logger } from '../logger';
import type { HandlerResultHead } from '../domain/mock-rules';

/**
 * Runs `type: python` mock rules (CONTRACT §2.5) of one case in a container of that case's own,
 * one request at a time over JSON lines on the container's attached stdin/stdout (python-handler.py
 * is the program). Unlike the original's in-process `exec` (§5.4, §13.9) a handler has a deadline
 * (the container is removed and a fresh one started when it passes), an address-space limit, no
 * worker environment (secrets), and the container is a sandbox: no network (so no socket reaches
 * anything, the host's abstract Unix sockets included), its own pid, mount, IPC and UTS namespaces
 * (no other case's handler, no host process, no host file: only the image's files, read-only, and a
 * small private /tmp), a uid of its own that owns nothing on the host, no capabilities,
 * no-new-privileges, and pids/memory/CPU limits. Docker is the one mechanism that works the same on
 * a host, inside the deploy image with only NET_ADMIN (where bubblewrap's setresuid and /proc mount
 * fail) and for a non-root worker in the docker group.
 *
 * The container removes itself when it ends (AutoRemove), and it ends when its stdin closes: also
 * when the worker dies without closing it (StdinOnce closes stdin when the attach connection drops),
 * and within the backstop alarm when the worker died during a request. No Docker log is kept: the
 * protocol carries request bodies. Every failure becomes a PythonHandlerError with a CONTRACT code.
 */

export interface PythonHandlerRequest {
  method: string;
  /** Absolute URL; the handler's scheme/host/path/query are derived from it with urllib, as the original did. */
  url: string;
  /** Raw header lines in order with their original casing; the dict keeps the last duplicate. */
  headers: Array<[string, string]>;
  body: Buffer;
}

interface PythonHandlerResult extends HandlerResultHead {
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
  docker: Dockerode;
  /** Any image with `python3` on its PATH (the program is passed on the command line). */
  image: string;
  timeoutMs?: number;
  memoryMb?: number;
  /** Labels the sandbox containers carry on top of PYTHON_HANDLER_LABEL (e.g. the deployment). */
  labels?: Record<string, string>;
  /** Makes the image present before the first container (e.g. ImagePuller, if-not-present). */
  ensureImage?: (image: string) => Promise<void>;
}

const DEFAULT_PYTHON_TIMEOUT_MS = 5_000;
const DEFAULT_PYTHON_MEMORY_MB = 256;
/** Marks handler sandboxes (they are not case containers: the orphan reaper leaves them alone). */
export const PYTHON_HANDLER_LABEL = 'io.agentbench.mock-python-handler';

const HANDLER_PROGRAM = readFileSync(path.join(__dirname, 'python-handler.py'), 'utf8');
const SAFE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** Container creation and start on a loaded Docker daemon; python itself is ready in ~50 ms. */
const STARTUP_TIMEOUT_MS = 30_000;
const STDERR_LOG_CHARS = 2_000;
/** Above the address-space limit: the interpreter's own pages, the /tmp tmpfs and docker-init. */
const MEMORY_HEADROOM_BYTES = 64 * 1024 * 1024;
const TMPFS_MB = 16;
const PIDS_LIMIT = 16;
const CPU_NANOS = 1_000_000_000;
/** Per-case uids come from here: far above any account a host or an image has. */
const UID_RANGE: readonly [number, number] = [2_000_000, 2_100_000_000];

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

/** One running sandbox container and its line reader. */
class HandlerProcess {
  private buffered = '';
  private pending: Pending | null = null;
  private readyWaiter: { resolve: () => void; reject: (err: Error) => void } | null = null;
  private stderrTail = '';
  private killed = false;
  private removal: Promise<void> | null = null;
  exited = false;

  constructor(
    readonly container: Dockerode.Container,
    private readonly stream: Duplex,
    docker: Dockerode,
    private readonly log: Logger,
  ) {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    docker.modem.demuxStream(stream, stdout, stderr);
    stdout.setEncoding('utf8');
    stdout.on('data', (chunk: string) => this.onData(chunk));
    stderr.setEncoding('utf8');
    stderr.on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-STDERR_LOG_CHARS);
    });
    // The attach stream ends when the container's process does.
    stream.on('error', (err) => this.fail(`sandbox stream failed: ${err.message}`));
    stream.on('end', () => this.fail('handler process exited'));
    stream.on('close', () => this.fail('handler process exited'));
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
      this.stream.write(line + '\n');
    });
  }

  /** Stderr the handlers wrote since the last call (print() output, tracebacks of the process). */
  takeStderr(): string {
    const tail = this.stderrTail;
    this.stderrTail = '';
    return tail;
  }

  /** False once killed, even before the stream ends: the next request must get a fresh container. */
  get usable(): boolean {
    return !this.exited && !this.killed;
  }

  /** Removes the container (it dies with everything in it); resolves once Docker has removed it. */
  kill(): Promise<void> {
    this.killed = true;
    this.removal ??= this.container
      .remove({ force: true })
      .then(() => undefined)
      .catch((err: unknown) => {
        // 404: already gone (AutoRemove), 409: its removal is under way.
        const status = (err as { statusCode?: number }).statusCode;
        if (status !== 404 && status !== 409)
          this.log.warn({ err: (err as Error).message }, 'could not remove a mock python sandbox');
      })
      .finally(() => {
        this.stream.destroy();
        this.fail('handler container removed');
      });
    return this.removal;
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

/** Serialises one case's requests onto its sandbox, starting a fresh one after a timeout or a crash. */
export class PythonHandlerPool {
  private process: HandlerProcess | null = null;
  private starting: Promise<HandlerProcess> | null = null;
  private imageReady: Promise<void> | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private nextId = 1;
  private closed = false;
  private readonly timeoutMs: number;
  private readonly memoryBytes: number;
  /** The case's uid: every sandbox of this pool runs as it, no other case's does (with high odds). */
  readonly uid = randomInt(UID_RANGE[0], UID_RANGE[1]);

  constructor(private readonly options: PythonHandlerPoolOptions) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_PYTHON_TIMEOUT_MS;
    this.memoryBytes = (options.memoryMb ?? DEFAULT_PYTHON_MEMORY_MB) * 1024 * 1024;
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
    await running?.kill();
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
        void handler.kill();
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
    this.starting ??= this.startSandbox().finally(() => (this.starting = null));
    this.process = await this.starting;
    return this.process;
  }

  private async startSandbox(): Promise<HandlerProcess> {
    const { docker, image, log } = this.options;
    const ensure = this.options.ensureImage;
    if (ensure) {
      this.imageReady ??= ensure(image).catch((err: unknown) => {
        this.imageReady = null;
        throw err;
      });
      await this.imageReady;
    }
    const backstopSeconds = Math.ceil(this.timeoutMs / 1000) + 2;
    const container = await docker.createContainer({
      Image: image,
      Entrypoint: ['python3'],
      Cmd: ['-I', '-c', HANDLER_PROGRAM, String(this.memoryBytes), String(backstopSeconds)],
      User: `${this.uid}:${this.uid}`,
      WorkingDir: '/tmp',
      Env: [`PATH=${SAFE_PATH}`, 'LANG=C.UTF-8', 'PYTHONDONTWRITEBYTECODE=1'],
      Hostname: 'mock-python',
      Labels: { ...this.options.labels, [PYTHON_HANDLER_LABEL]: 'true' },
      AttachStdin: true,
      AttachStdout: true,
      AttachStderr: true,
      OpenStdin: true,
      StdinOnce: true,
      Tty: false,
      NetworkDisabled: true,
      HostConfig: {
        NetworkMode: 'none',
        ReadonlyRootfs: true,
        Tmpfs: { '/tmp': `rw,nosuid,nodev,noexec,size=${TMPFS_MB}m` },
        CapDrop: ['ALL'],
        SecurityOpt: ['no-new-privileges'],
        IpcMode: 'private',
        PidsLimit: PIDS_LIMIT,
        Memory: this.memoryBytes + MEMORY_HEADROOM_BYTES,
        MemorySwap: this.memoryBytes + MEMORY_HEADROOM_BYTES,
        NanoCpus: CPU_NANOS,
        // docker-init as PID 1: the handler's SIGALRM backstop keeps its default action.
        Init: true,
        AutoRemove: true,
        LogConfig: { Type: 'none', Config: {} },
      },
    });
    let handler: HandlerProcess | undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      const stream = (await container.attach({
        stream: true,
        stdin: true,
        stdout: true,
        stderr: true,
        hijack: true,
      })) as Duplex;
      handler = new HandlerProcess(container, stream, docker, log);
      const ready = handler.ready();
      // A start that throws kills the handler, which rejects `ready` with nobody awaiting it yet.
      ready.catch(() => undefined);
      await container.start();
      await Promise.race([
        ready,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no ready line within ${STARTUP_TIMEOUT_MS} ms`)),
            STARTUP_TIMEOUT_MS,
          );
        }),
      ]);
    } catch (err) {
      await (handler?.kill() ?? container.remove({ force: true }).catch(() => undefined));
      throw err;
    } finally {
      clearTimeout(timer);
    }
    log.debug({ container: container.id, uid: this.uid }, 'mock python sandbox started');
    return handler;
  }
}

function toHandlerError(error: string | undefined): PythonHandlerError {
  const text = error ?? 'E_MOCK_PYTHON_ERROR: handler process gave no reason';
  const code = ERROR_CODES.find((c) => text === c || text.startsWith(`${c}:`)) ?? 'E_MOCK_PYTHON_ERROR';
  const detail = text.startsWith(code) ? text.slice(code.length).replace(/^:\s*/, '') : text;
  return new PythonHandlerError(code, detail || undefined);
}
