import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Duplex, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { setTimeout as delay } from 'node:timers/promises';
import type Dockerode from 'dockerode';
import {
  DEFAULT_INSPECT_TIMEOUT_SECONDS,
  DEFAULT_PULL_TIMEOUT_SECONDS,
  DEFAULT_RUN_TIMEOUT_SECONDS,
  type PullPolicy,
  type ResolvedCaseSpec,
  type StartupTimeouts,
} from '../domain/runtime-spec';
import type { Logger } from '../logger';
import { DockerInfraError, errorDetail, SandboxSpecError, statusCode, withDockerDeadline } from './errors';
import type { ImagePuller } from './image-puller';
import { LABELS } from './labels';
import type { Semaphore } from './semaphore';
import { tarArchive } from './tar-archive';
import { CASE_FILES_ROOT, CaseFileDirectory } from './case-file-directory';
import {
  AWAIT_GONE_EXIT_CODE,
  AWAIT_SCRIPT,
  awaitEnv,
  EXEC_TOKEN_ENV,
  parseProbe,
  PROBE_SCRIPT,
  READ_SCRIPT,
  recordedCaseCmd,
} from './case-command-record';

/** One case's container: the run's resolved spec (limits, hardening, user, startup) and the case's own parts. */
export interface CaseContainerSpec extends Pick<ResolvedCaseSpec, 'limits' | 'hardening' | 'startup'> {
  name: string;
  image: string;
  /** Run as ['sh', '-lc', startCommand]; undefined = the image's CMD. */
  startCommand: string | undefined;
  env: Record<string, string>;
  labels: Record<string, string>;
  network?: string;
  /** What `host.docker.internal` resolves to: the host's address on `network`; else Docker's host-gateway (docker0). */
  hostAddress?: string;
  files?: Array<{ path: string; content: string; mode?: number }>;
  /** Exec/run user; undefined = the image's user. */
  user?: string;
  /**
   * How a missing image is obtained on this host (the run's pull_policy and pull_timeout_seconds).
   * Absent = pulled if not present, within 120 s.
   */
  pull?: { policy: PullPolicy; timeoutSeconds: number };
}

/** A started case container, with the startup window its agent-not-ready retries get (§6.3). */
export interface StartedContainer {
  containerId: string;
  name: string;
  /** Its addresses on its networks (how servers on the host see its requests). */
  addresses: string[];
  startup: StartupTimeouts;
}

export interface ExecParams {
  command: string;
  env?: Record<string, string>;
  user?: string;
  timeoutMs: number;
  signal?: AbortSignal;
}

export interface ExecResult {
  /** -1 when the daemon reported no exit code (e.g. the exec was killed before it registered one). */
  exitCode: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  durationMs: number;
}

export interface AgentReadyParams extends ExecParams {
  onRetry?: (attempt: number, retryInMs: number) => void;
}

/** A case container of a killed predecessor, as the retry finds it (inspectPredecessor). */
export type PredecessorContainer =
  | { kind: 'gone' }
  | { kind: 'unadoptable'; reason: string; name: string; networks: string[] }
  | { kind: 'adoptable'; container: AdoptableContainer };

export interface AdoptableContainer {
  containerId: string;
  name: string;
  /** Its addresses on its networks (how servers on the host see its requests). */
  addresses: string[];
  /** The networks it is on (a case network of its own goes with it). */
  networks: string[];
  /** Its environment as created (`BENCHMARK_MOCK_BASE_URL`, the OTel ingest token). */
  env: Record<string, string>;
  labels: Record<string, string>;
  /** When its case command started (whole seconds: the wrapper's `date +%s`). */
  startedAtMs: number;
  /** The case command's exec token: what a timeout kills it by. */
  token: string;
  /** null while the case command runs. */
  exitCode: number | null;
}

interface ContainerState {
  running: boolean;
  /** null while running or never started. */
  exitCode: number | null;
  oomKilled: boolean;
}

interface ManagedContainer {
  id: string;
  name: string;
  labels: Record<string, string>;
  createdAt: Date;
  state: string;
  /** The networks it is on (by name). */
  networks: string[];
}

/** Per stream; an agent that prints more keeps only its tail (the end is where the answer and errors are). */
export const EXEC_OUTPUT_CAP_BYTES = 1024 * 1024;
const STARTUP_LOG_TAIL_CHARS = 2000;
const LOGS_READ_TIMEOUT_MS = 10_000;
const EXEC_SETTLE_TIMEOUT_MS = 5_000;
const KILL_EXEC_TIMEOUT_MS = 10_000;
const OOM_EVENTS_TIMEOUT_MS = 5_000;
/** Deadlines of the Docker calls no runtime spec setting covers. */
const REMOVE_TIMEOUT_MS = 60_000;
const LIST_TIMEOUT_MS = 30_000;
const EXEC_CALL_TIMEOUT_MS = 30_000;
const EXEC_INSPECT_TIMEOUT_MS = 10_000;
const COPY_TIMEOUT_MS = 60_000;
const NO_SUCH_IMAGE = /no such image/i;
/** The killer gets the token under another name so it never matches its own needle. */
const KILL_TOKEN_ENV = 'AGENTBENCH_KILL_TOKEN';
const DOCKER_SOCKET = /docker\.sock/;
const NOT_READY_PATTERNS = [
  'curl: (7)',
  'failed to connect',
  "couldn't connect to server",
  'connection refused',
];

/**
 * Kills every process whose environment carries the exec token, as the exec's own user (with
 * CapDrop ALL, root could not signal another uid). Repeats until a scan finds nothing, so children
 * forked between a scan and the kill are caught too. Plain POSIX sh + grep: works on busybox and Debian.
 */
const KILL_BY_TOKEN_SCRIPT = `
needle="${EXEC_TOKEN_ENV}=$${KILL_TOKEN_ENV}"
round=0
while [ "$round" -lt 20 ]; do
  round=$((round + 1))
  pids=""
  for d in /proc/[0-9]*; do
    p="\${d#/proc/}"
    [ "$p" = "$$" ] && continue
    grep -q "$needle" "$d/environ" 2>/dev/null && pids="$pids $p"
  done
  [ -z "$pids" ] && exit 0
  kill -9 $pids 2>/dev/null
done
exit 1
`;

/**
 * Case end (issue 15 item 6): SIGTERM to the case's processes, then wait (at most
 * $AGENTBENCH_STOP_ROUNDS × 50 ms in all) until they are gone, so an agent's SDK can flush its last
 * spans on shutdown before the container is killed. In two steps: first everything below the
 * start command (a server it runs), then the start command itself (init's children) — ending the
 * start command first would end init and with it, at once, the whole container. This script, its
 * `sleep`s and zombies are not waited for. What outlived the grace is printed (not told by the exit
 * code: reading that would cost an exec inspect per case, and only a debug line uses it).
 */
const TERMINATE_ALL_SCRIPT = `
scan() {
  found=""
  for d in /proc/[0-9]*; do
    p="\${d#/proc/}"
    if [ "$p" = 1 ] || [ "$p" = "$$" ] || [ ! -r "$d/status" ]; then continue; fi
    state=""
    ppid=""
    while read -r key value _; do
      case "$key" in
        State:) state="$value" ;;
        PPid:) ppid="$value" ;;
      esac
    done < "$d/status"
    if [ -z "$state" ] || [ "$state" = Z ] || [ "$ppid" = "$$" ]; then continue; fi
    if [ "$ppid" = 1 ]; then
      [ "$1" = top ] && found="$found $p"
    else
      [ "$1" = rest ] && found="$found $p"
    fi
  done
}
wait_gone() {
  while [ "$round" -lt "$AGENTBENCH_STOP_ROUNDS" ]; do
    scan "$1"
    [ -z "$found" ] && return 0
    sleep 0.05 2>/dev/null || sleep 1
    round=$((round + 1))
  done
  return 1
}
round=0
scan rest
[ -n "$found" ] && kill -TERM $found 2>/dev/null
wait_gone rest
scan top
[ -n "$found" ] && kill -TERM $found 2>/dev/null
wait_gone top || echo "still running:$found"
`;
const STOP_POLL_MS = 50;
/**
 * Start commands that only keep the container alive (CONTRACT §6.2's `sleep infinity`): nothing in
 * them holds spans to flush at the case's end.
 */
const IDLE_START_COMMAND = /^\s*(?:exec\s+)?(sleep\s+(?:infinity|inf)|tail\s+-f\s+\/dev\/null)\s*$/;

/** Whether the start command only keeps the container alive (a warm container can run it before its case). */
export function isIdleStartCommand(command: string): boolean {
  return IDLE_START_COMMAND.test(command);
}
const TOP_TIMEOUT_MS = 10_000;
/** Docker's init (HostConfig.Init) as `ps` shows it: PID 1 of every case container. */
const DOCKER_INIT = /^\S*docker-init\s+--\s/;
/** remove()'s own steps after its SIGTERM grace: the kill and the removal call. */
const OUTSIDE_STOP_SLACK_MS = 5_000;

const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;

/** What `NAME=value` can carry as a name without changing its meaning. */
const ENV_NAME = /^[^=\0]+$/;

/**
 * What only the sandbox can guarantee, whoever the caller: a usable container name, env names its
 * `NAME=value` encoding keeps intact, and files that land at absolute paths and never over the
 * Docker socket. (The runtime spec's own values are validated once, in resolveCaseSpec.)
 */
function checkContainerSpec(spec: CaseContainerSpec): void {
  if (!NAME.test(spec.name))
    throw new SandboxSpecError(`name: a valid container name, got ${JSON.stringify(spec.name)}`);
  const badEnv = Object.keys(spec.env).find((name) => !ENV_NAME.test(name));
  if (badEnv !== undefined)
    throw new SandboxSpecError(`env: names must not contain "=" or NUL, got ${JSON.stringify(badEnv)}`);
  for (const [i, f] of (spec.files ?? []).entries()) {
    if (!f.path.startsWith('/')) throw new SandboxSpecError(`files[${i}].path: must be absolute`);
    if (DOCKER_SOCKET.test(f.path))
      throw new SandboxSpecError(`files[${i}].path: must not target the Docker socket`);
  }
}

/**
 * How files reach a case container: `bind` = a host directory mounted read-only at /benchmark (cheap,
 * needs a daemon that sees the worker's filesystem); `copy` = `putArchive` into the container before
 * it starts (works with any daemon, ~45 ms per container); `auto` = bind, switching to copy for good
 * the first time the daemon says the directory does not exist on its side.
 */
export type CaseFileDelivery = 'auto' | 'bind' | 'copy';

interface DockerSandboxOptions {
  caseFileDelivery?: CaseFileDelivery;
  /** Host directory holding one subdirectory per case container (bind delivery). */
  caseFilesDir?: string;
  /** OCI runtime registered with dockerd (`runc`, `crun`); undefined = the daemon's default. */
  runtime?: string;
  /**
   * OTEL_FLUSH_GRACE_MS: remove() first sends SIGTERM to the container's processes and waits up
   * to this long for them to exit (agents flush telemetry on shutdown); 0 = kill at once.
   */
  stopGraceMs?: number;
  /**
   * Config.deploymentId, put on every container as LABELS.deployment: the orphan reaper only judges
   * its own deployment's containers. Without it (tests, tools) containers carry no deployment label,
   * and no deployment's reaper ever touches them.
   */
  deploymentId?: string;
  /**
   * Makes a case's image available when the daemon does not have it (a case scheduled on a worker
   * that did not prepare its run): the worker's one ImagePuller, so concurrent cases of one image
   * share one pull. Without it, a missing image fails the create.
   */
  images?: ImagePuller;
}

export const DEFAULT_CASE_FILES_DIR = join(tmpdir(), 'agentbench-case-files');
const BIND_SOURCE_MISSING = /bind source path does not exist/i;

/**
 * One fresh, hardened container per case (CONTRACT §6.2) and everything the case does in it.
 * Daemon-mutating calls (create, start, remove) share the `ops` semaphore so a burst of cases
 * queues here instead of overloading dockerd; exec and log reads are per-container and bypass it.
 */
export class DockerSandbox {
  private delivery: CaseFileDelivery;
  private readonly runtime: string | undefined;
  readonly caseFiles: CaseFileDirectory;
  /** Container id → name, for the containers whose file directory this process wrote. */
  private readonly fileDirs = new Map<string, string>();
  /**
   * Container id → the command lines (`ps` CMD) of its idle start command: a container running
   * nothing else has nothing to stop gracefully (see remove()).
   */
  private readonly idleProcesses = new Map<string, string[]>();
  /**
   * Container id → the env of the case a warm container was handed to (assignCase): given to every
   * exec in it, since a container's own env is fixed at its create, before it had a case.
   */
  private readonly caseEnvs = new Map<string, Record<string, string>>();
  /** Containers remove() is stopping right now (by the id or name it was given). */
  private readonly stopping = new Set<string>();
  private readonly stopGraceMs: number;
  private readonly deploymentLabel: Record<string, string>;
  private readonly images: ImagePuller | undefined;

  constructor(
    private readonly docker: Dockerode,
    private readonly ops: Semaphore,
    private readonly log: Logger,
    options: DockerSandboxOptions = {},
  ) {
    this.delivery = options.caseFileDelivery ?? 'auto';
    this.runtime = options.runtime;
    this.stopGraceMs = options.stopGraceMs ?? 0;
    this.caseFiles = new CaseFileDirectory(options.caseFilesDir ?? DEFAULT_CASE_FILES_DIR);
    this.deploymentLabel = options.deploymentId ? { [LABELS.deployment]: options.deploymentId } : {};
    this.images = options.images;
  }

  /** The delivery in effect (`auto` resolves to bind or copy on the first container with files). */
  get caseFileDelivery(): CaseFileDelivery {
    return this.delivery;
  }

  /**
   * Creates (replacing a same-named leftover), writes `files`, starts and waits for Running; returns
   * the container's addresses on its networks (how servers on the host see its requests).
   * On failure the container is removed before the error is thrown, so a failed call leaves nothing.
   */
  async createAndStart(
    spec: CaseContainerSpec,
    opts: { emptyCaseFiles?: boolean } = {},
  ): Promise<StartedContainer> {
    checkContainerSpec(spec);

    const options: Dockerode.ContainerCreateOptions = {
      name: spec.name,
      Image: spec.image,
      Cmd: spec.startCommand === undefined ? undefined : ['sh', '-lc', spec.startCommand],
      Env: sortedEnv(spec.env),
      // Ours last: a caller label can never un-manage a container or move it to another deployment
      // (the reaper relies on both).
      Labels: {
        [LABELS.createdAt]: new Date().toISOString(),
        ...spec.labels,
        [LABELS.managed]: 'true',
        ...this.deploymentLabel,
      },
      User: spec.user,
      HostConfig: {
        // CONTRACT §6.2 adds this only when the runner's host is Linux.
        // On a case's own network the host is that network's gateway (docker0 is firewalled off).
        ExtraHosts:
          process.platform === 'linux'
            ? [`host.docker.internal:${spec.hostAddress ?? 'host-gateway'}`]
            : undefined,
        NetworkMode: spec.network,
        Memory: spec.limits.memoryMb * 1024 * 1024,
        // Equal to Memory: no swap on top, so the limit is the limit.
        MemorySwap: spec.limits.memoryMb * 1024 * 1024,
        NanoCpus: Math.round(spec.limits.cpus * 1e9),
        PidsLimit: spec.limits.pidsLimit,
        SecurityOpt: spec.hardening.noNewPrivileges ? ['no-new-privileges:true'] : undefined,
        CapDrop: spec.hardening.dropAllCapabilities ? ['ALL'] : undefined,
        // An init as PID 1 reaps the processes we kill on exec timeout; a `sleep` PID 1 would leave zombies
        // that count against PidsLimit.
        Init: true,
        AutoRemove: false,
        Runtime: this.runtime,
      },
    };

    const files = spec.files ?? [];
    const copied =
      this.delivery === 'copy' ? files : files.filter((f) => !CaseFileDirectory.mountable(f.path));
    const mounted = files.filter((f) => !copied.includes(f));
    // A warm container (createIdle) gets its case's files later, in a directory mounted now.
    const mounting = mounted.length > 0 || (opts.emptyCaseFiles === true && this.delivery !== 'copy');
    if (mounting) {
      const source = await this.caseFiles.write(spec.name, mounted);
      options.HostConfig = {
        ...options.HostConfig,
        Mounts: [{ Type: 'bind', Source: source, Target: CASE_FILES_ROOT, ReadOnly: true }],
      };
    }

    const deadlines = callDeadlines(spec.startup);
    let containerId: string;
    try {
      containerId = await this.createContainer(options, spec, deadlines);
    } catch (err) {
      if (mounting && this.delivery === 'auto' && BIND_SOURCE_MISSING.test(errorDetail(err))) {
        // The daemon does not see our filesystem (worker in a container, remote daemon): copy from now on.
        this.delivery = 'copy';
        this.log.warn(
          { code: 'SANDBOX_CASE_FILES_COPY', case_files_dir: this.caseFiles.root, err: errorDetail(err) },
          'the Docker daemon cannot see the case files directory; copying files into each container instead',
        );
        await this.caseFiles.remove(spec.name);
        return this.createAndStart(spec, opts);
      }
      if (mounting) await this.caseFiles.remove(spec.name);
      // Timeouts and pull failures keep their own codes.
      if (err instanceof DockerInfraError) throw err;
      throw new DockerInfraError('E_DOCKER_CREATE', errorDetail(err), { cause: err });
    }
    if (mounting) {
      if (this.delivery === 'auto') this.delivery = 'bind';
      this.fileDirs.set(containerId, spec.name);
    }

    let addresses: string[];
    try {
      if (copied.length > 0) await this.writeFiles(containerId, copied);
      try {
        await this.ops.run(() =>
          withDockerDeadline(
            () => this.docker.getContainer(containerId).start(),
            deadlines.runMs,
            'E_DOCKER_RUN_TIMEOUT',
            'docker start',
          ),
        );
      } catch (err) {
        if (err instanceof DockerInfraError) throw err;
        throw new DockerInfraError('E_DOCKER_CREATE', errorDetail(err), { cause: err });
      }
      addresses = await this.waitRunning(containerId, spec.name, spec.startup, deadlines.inspectMs);
    } catch (err) {
      // Nothing of the case ran in it yet: no spans to flush, so no graceful stop (an exec that would
      // mostly fail on a container that is not running).
      await this.remove(containerId, { graceful: false }).catch((cleanupErr: unknown) =>
        this.log.warn(
          { container: spec.name, err: errorDetail(cleanupErr) },
          'could not remove failed container',
        ),
      );
      throw err;
    }
    const idle = spec.startCommand === undefined ? null : IDLE_START_COMMAND.exec(spec.startCommand);
    if (idle?.[1] !== undefined)
      this.idleProcesses.set(containerId, [`sh -lc ${spec.startCommand}`, idle[1]].map(oneSpaced));
    this.log.debug(
      { container: spec.name, container_id: containerId, image: spec.image },
      'case container started',
    );
    return { containerId, name: spec.name, addresses, startup: spec.startup };
  }

  /**
   * A warm container (src/docker/warm-pool.ts): created and started from `spec` with no case in it
   * — no env, no files, its case files directory mounted empty (bind delivery) — for assignCase.
   */
  async createIdle(spec: Omit<CaseContainerSpec, 'env' | 'files'>): Promise<StartedContainer> {
    return this.createAndStart({ ...spec, env: {}, files: [] }, { emptyCaseFiles: true });
  }

  /**
   * Hands a createIdle container to one case (once: it is removed after that case, as any other):
   * its files written (into its mounted directory, else copied in), its env given to every exec in it.
   * The rest of `spec` (image, limits, network, start command) is what the container was created
   * with: warm-pool.ts only hands a container to a case whose spec has the same.
   */
  async assignCase(container: StartedContainer, spec: CaseContainerSpec): Promise<StartedContainer> {
    checkContainerSpec(spec);
    const { containerId } = container;
    const files = spec.files ?? [];
    const mountedAs = this.fileDirs.get(containerId);
    const mounted = mountedAs === undefined ? [] : files.filter((f) => CaseFileDirectory.mountable(f.path));
    const copied = files.filter((f) => !mounted.includes(f));
    if (mountedAs !== undefined && mounted.length > 0) await this.caseFiles.add(mountedAs, mounted);
    if (copied.length > 0) await this.writeFiles(containerId, copied);
    this.caseEnvs.set(containerId, spec.env);
    return { ...container, startup: spec.startup };
  }

  /**
   * A same-named container can only be a crashed attempt's leftover: removed when the daemon reports
   * the conflict. A missing image is ensured (outside the ops slot: the pull takes one itself) and
   * the create tried again; cases whose image is here pay nothing for the check.
   */
  private async createContainer(
    options: Dockerode.ContainerCreateOptions,
    spec: CaseContainerSpec,
    deadlines: CallDeadlines,
  ): Promise<string> {
    const create = async () =>
      (
        await this.ops.run(() =>
          withDockerDeadline(
            () => this.docker.createContainer(options),
            deadlines.runMs,
            'E_DOCKER_RUN_TIMEOUT',
            'docker create',
          ),
        )
      ).id;
    for (let tries = 1; ; tries++) {
      try {
        return await create();
      } catch (err) {
        if (tries >= 3) throw err;
        const status = statusCode(err);
        if (status === 409 && options.name !== undefined) {
          await this.removeContainer(options.name, deadlines.inspectMs);
        } else if (status === 404 && this.images && NO_SUCH_IMAGE.test(errorDetail(err))) {
          const policy = spec.pull?.policy === 'never' ? 'never' : 'if-not-present';
          await this.images.ensureImage(
            spec.image,
            policy,
            spec.pull?.timeoutSeconds ?? DEFAULT_PULL_TIMEOUT_SECONDS,
            deadlines.inspectMs / 1000,
          );
        } else throw err;
      }
    }
  }

  /**
   * Runs `sh -lc <command>` and captures its output. On timeout or abort the process tree inside
   * the container is killed too (the original only dropped its client and left the agent running).
   */
  async exec(containerId: string, p: ExecParams): Promise<ExecResult> {
    return this.execChecked(containerId, p, false);
  }

  /**
   * The case command: as exec(), run under the wrapper that records it in the container
   * (case-command-record.ts), so a retry after this worker's death can adopt it. Same output and
   * exit code; a timeout's kill also kills the wrapper before it prints, so the output up to the kill
   * is read from the record (one exec more, on a timeout only).
   */
  async execCase(containerId: string, p: ExecParams): Promise<ExecResult> {
    const result = await this.execChecked(containerId, p, true);
    if (!result.timedOut) return result;
    const partial = await this.readRecord(containerId).catch(() => null);
    return partial ? { ...result, stdout: partial.stdout, stderr: partial.stderr } : result;
  }

  private async execChecked(containerId: string, p: ExecParams, recorded: boolean): Promise<ExecResult> {
    const startedAt = Date.now();
    const caseEnv = this.caseEnvs.get(containerId);
    const params = caseEnv ? { ...p, env: { ...caseEnv, ...p.env } } : p;
    const result = await this.runExec(
      containerId,
      params,
      'kill-tree',
      'settle',
      recorded ? recordedCaseCmd(p.command) : undefined,
    );
    // 137 = SIGKILL. The kernel's OOM killer hits the exec'd process, not PID 1, so State.OOMKilled stays
    // false; the daemon's `oom` event for the container is what tells the two apart.
    if (!result.timedOut && result.exitCode === 137 && (await this.oomEventSince(containerId, startedAt))) {
      throw new DockerInfraError(
        'E_CONTAINER_OOM_KILLED',
        `container=${containerId} exceeded its memory limit (exit code 137); stderr tail: ${result.stderr.slice(-500).trim()}`,
      );
    }
    return result;
  }

  /**
   * `onStop` = what a timeout/abort does in the container; the killer itself must not spawn killers.
   * `exitCode: 'skip'` spares the exec inspect(s) the exit code takes (reported as -1) for a caller
   * that does not use it.
   */
  private async runExec(
    containerId: string,
    p: ExecParams,
    onStop: 'kill-tree' | 'leave',
    exitCode: 'settle' | 'skip' = 'settle',
    cmd: string[] = ['sh', '-lc', p.command],
  ): Promise<ExecResult> {
    const startedAt = Date.now();
    throwIfAborted(p.signal);
    const token = randomBytes(12).toString('hex');
    const container = this.docker.getContainer(containerId);

    let exec: Dockerode.Exec;
    let stream: Duplex;
    try {
      exec = await withDockerDeadline(
        () =>
          container.exec({
            Cmd: cmd,
            Env: sortedEnv({ ...p.env, [EXEC_TOKEN_ENV]: token }),
            User: p.user,
            AttachStdin: false,
            AttachStdout: true,
            AttachStderr: true,
            Tty: false,
          }),
        EXEC_CALL_TIMEOUT_MS,
        'E_DOCKER_EXEC_TIMEOUT',
        'docker exec create',
      );
      const created = exec;
      stream = await withDockerDeadline(
        () => created.start({ hijack: true, stdin: false }),
        EXEC_CALL_TIMEOUT_MS,
        'E_DOCKER_EXEC_TIMEOUT',
        'docker exec start',
      );
    } catch (err) {
      if (err instanceof DockerInfraError) throw err;
      // The container stopped — its start command ended. Say so, with its exit code and logs. Not
      // only on a 409: a container that dies between the exec's create and its start fails the start
      // with the runtime's 500 ("cannot exec in a stopped container"). Error path only: one inspect.
      const state = await this.inspectState(containerId).catch(() => null);
      if (state && !state.running) {
        throw await this.startupFailure(
          containerId,
          `container=${containerId} stopped before the command could run;`,
          state,
        );
      }
      throw new DockerInfraError('E_DOCKER_EXEC', errorDetail(err), { cause: err });
    }

    const stdout = new TailCapture(EXEC_OUTPUT_CAP_BYTES);
    const stderr = new TailCapture(EXEC_OUTPUT_CAP_BYTES);
    this.docker.modem.demuxStream(stream, stdout, stderr);

    const outcome = await raceExec(stream, p.timeoutMs, p.signal);
    if (outcome.kind !== 'finished') {
      // Drop our end first so a flood of output cannot keep us busy while we kill.
      stream.destroy();
      if (onStop === 'kill-tree') await this.killExec(containerId, exec, token, p.user);
    }
    if (outcome.kind === 'aborted') throw abortError(p.signal);
    if (outcome.kind === 'stream-error') {
      throw new DockerInfraError('E_DOCKER_EXEC', errorDetail(outcome.error), { cause: outcome.error });
    }

    return {
      exitCode: exitCode === 'settle' ? await this.settledExitCode(exec) : -1,
      stdout: stdout.text(),
      stderr: stderr.text(),
      timedOut: outcome.kind === 'timeout',
      durationMs: Date.now() - startedAt,
    };
  }

  /**
   * CONTRACT §6.3 "agent not ready": re-runs the whole command while it fails like a refused
   * connection and the startup window (from the first attempt) is still open.
   */
  async execUntilAgentReady(
    container: Pick<StartedContainer, 'containerId' | 'startup'>,
    p: AgentReadyParams,
  ): Promise<ExecResult & { attempts: number }> {
    const { containerId, startup } = container;
    const firstAttemptAt = Date.now();
    const retryInMs = startup.pollIntervalSeconds * 1000;
    for (let attempts = 1; ; attempts++) {
      const result = await this.execCase(containerId, p);
      const windowOpen = Date.now() - firstAttemptAt < startup.timeoutSeconds * 1000;
      if (result.timedOut || result.exitCode === 0 || !looksNotReady(result) || !windowOpen) {
        return { ...result, attempts };
      }
      p.onRetry?.(attempts, retryInMs);
      try {
        await delay(retryInMs, undefined, { signal: p.signal });
      } catch {
        throw abortError(p.signal);
      }
    }
  }

  /**
   * A killed predecessor's case container as a retry finds it: adoptable while it runs and its case
   * command started there under the recording wrapper (finished or not). One inspect and one exec.
   */
  async inspectPredecessor(containerId: string): Promise<PredecessorContainer> {
    let info: Dockerode.ContainerInspectInfo;
    try {
      info = await withDockerDeadline(
        () => this.docker.getContainer(containerId).inspect(),
        DEFAULT_INSPECT_TIMEOUT_SECONDS * 1000,
        'E_DOCKER_INSPECT_TIMEOUT',
        'docker inspect',
      );
    } catch (err) {
      if (err instanceof DockerInfraError) throw err;
      if (statusCode(err) === 404) return { kind: 'gone' };
      throw new DockerInfraError('E_DOCKER_INSPECT', errorDetail(err), { cause: err });
    }
    const networks = Object.keys(info.NetworkSettings.Networks ?? {});
    const name = info.Name.replace(/^\//, '');
    const unadoptable = (reason: string): PredecessorContainer => ({
      kind: 'unadoptable',
      reason,
      name,
      networks,
    });
    if (!info.State.Running) return unadoptable(`container ${info.State.Status}`);
    let probe: ReturnType<typeof parseProbe>;
    try {
      const r = await this.runExec(
        containerId,
        { command: PROBE_SCRIPT, timeoutMs: KILL_EXEC_TIMEOUT_MS },
        'leave',
        'skip',
      );
      probe = parseProbe(r.stdout);
    } catch (err) {
      return unadoptable(`its record is unreadable: ${errorDetail(err)}`);
    }
    if (probe.kind === 'not-started') return unadoptable('the case command never started in it');
    if (probe.kind === 'lost') return unadoptable('the case command ended without an exit code');
    return {
      kind: 'adoptable',
      container: {
        containerId: info.Id,
        name,
        addresses: Object.values(info.NetworkSettings.Networks ?? {})
          .map((n) => n.IPAddress)
          .filter((ip): ip is string => typeof ip === 'string' && ip !== ''),
        networks,
        env: envRecord(info.Config.Env ?? []),
        labels: info.Config.Labels ?? {},
        startedAtMs: probe.startedAtMs,
        token: probe.token,
        exitCode: probe.kind === 'finished' ? probe.exitCode : null,
      },
    };
  }

  /**
   * The adopted case command's outcome: waits (one exec polling in the container) for its exit
   * code when it still runs, then reads its record. Past `timeoutMs` its process tree is killed by
   * its token and what it printed until then comes back as a timeout, as exec() does. An abort
   * stops the wait only (the caller removes the container).
   */
  async awaitCaseCommand(
    c: Pick<AdoptableContainer, 'containerId' | 'token' | 'exitCode' | 'startedAtMs'>,
    p: { timeoutMs: number; signal?: AbortSignal },
  ): Promise<ExecResult> {
    const { containerId, token } = c;
    if (c.exitCode === null) {
      const waited = await this.runExec(
        containerId,
        {
          command: AWAIT_SCRIPT,
          env: awaitEnv(token),
          timeoutMs: Math.max(0, p.timeoutMs),
          signal: p.signal,
        },
        'kill-tree',
      );
      if (waited.timedOut) {
        await this.killTree(containerId, token);
        const partial = await this.readRecord(containerId).catch(() => null);
        return {
          exitCode: -1,
          stdout: partial?.stdout ?? '',
          stderr: partial?.stderr ?? '',
          timedOut: true,
          durationMs: Date.now() - c.startedAtMs,
        };
      }
      if (waited.exitCode !== 0)
        throw new DockerInfraError(
          'E_SANDBOX_CONTAINER_STOPPED',
          waited.exitCode === AWAIT_GONE_EXIT_CODE
            ? `container=${containerId}: the adopted case command ended without an exit code`
            : `container=${containerId} stopped while the adopted case command ran`,
        );
    }
    const record = await this.readRecord(containerId);
    return { ...record, timedOut: false, durationMs: Date.now() - c.startedAtMs };
  }

  /** The record's stdout, stderr and exit code (255 while it has none). */
  private readRecord(containerId: string): Promise<ExecResult> {
    return this.runExec(containerId, { command: READ_SCRIPT, timeoutMs: EXEC_CALL_TIMEOUT_MS }, 'leave');
  }

  /** stdout+stderr in the order the container wrote them, last tailChars chars; never throws (CONTRACT §6.2 step 5). */
  async logs(containerId: string, tailChars: number): Promise<string> {
    try {
      const raw = await withTimeout(
        this.docker.getContainer(containerId).logs({
          stdout: true,
          stderr: true,
          follow: false,
          // Every line is at least one char, so tailChars lines always cover tailChars chars.
          tail: Math.max(1, tailChars),
        }),
        LOGS_READ_TIMEOUT_MS,
        'docker logs',
      );
      const text = demuxLogBuffer(raw).toString('utf8');
      return tailChars > 0 ? text.slice(-tailChars) : '';
    } catch (err) {
      return `E_DOCKER_LOGS_READ: ${errorDetail(err)}`;
    }
  }

  /**
   * Force-removes a container, its anonymous volumes and its case files directory; already gone or
   * already being removed is success. A running container first gets its processes stopped
   * gracefully (stopGraceMs), so what they still had to send (spans) is sent before the kill;
   * `graceful: false` skips that for a container nothing of the case ran in.
   */
  async remove(containerIdOrName: string, opts: { graceful?: boolean } = {}): Promise<void> {
    this.stopping.add(containerIdOrName);
    const idle = this.idleProcesses.get(containerIdOrName);
    this.idleProcesses.delete(containerIdOrName);
    this.caseEnvs.delete(containerIdOrName);
    try {
      if (
        this.stopGraceMs > 0 &&
        opts.graceful !== false &&
        !(idle && (await this.runsOnly(containerIdOrName, idle)))
      )
        await this.terminateProcesses(containerIdOrName);
      if (!(await this.removeContainer(containerIdOrName))) return;
    } finally {
      this.stopping.delete(containerIdOrName);
    }
    const name =
      this.fileDirs.get(containerIdOrName) ?? (NAME.test(containerIdOrName) ? containerIdOrName : undefined);
    this.fileDirs.delete(containerIdOrName);
    if (name !== undefined) await this.caseFiles.remove(name);
  }

  /** Whether `containerId` is a warm container assignCase handed to a case, not yet removed. */
  hasCase(containerId: string): boolean {
    return this.caseEnvs.has(containerId);
  }

  /**
   * Whether a case command that died of a signal (exit code > 128, e.g. 143 = SIGTERM) was stopped
   * by us rather than by itself: its container is being removed by this process, or it stops or
   * disappears within the time remove() takes from its SIGTERM to the removal (stopGraceMs, plus
   * slack) — another worker's retry, the orphan reaper, a daemon going down. A container still
   * running after that is the agent's own exit, a result like any other.
   */
  async stoppedFromOutside(containerId: string): Promise<boolean> {
    const deadline = Date.now() + this.stopGraceMs + OUTSIDE_STOP_SLACK_MS;
    for (;;) {
      if (this.stopping.has(containerId)) return true;
      const found = await this.inspect(containerId);
      if (found === null || !found.state.running) return true;
      if (Date.now() >= deadline) return false;
      await delay(250);
    }
  }

  /**
   * Whether the container runs nothing but init and its idle start command: one `top` (a `ps` by
   * the daemon) instead of the graceful stop's exec create + start (and a runc exec) per case. A
   * process the case left behind (an agent server started in the background) shows up here and
   * gets its SIGTERM as before. false when the daemon cannot tell (the exec then finds out).
   */
  private async runsOnly(containerId: string, commandLines: string[]): Promise<boolean> {
    try {
      const top = await withDockerDeadline(
        () => this.docker.getContainer(containerId).top() as Promise<unknown>,
        TOP_TIMEOUT_MS,
        'E_DOCKER_TOP_TIMEOUT',
        'docker top',
      );
      const { Titles: titles, Processes: rows } = top as { Titles?: string[]; Processes?: string[][] };
      const cmd = titles?.indexOf('CMD') ?? -1;
      if (cmd < 0 || !rows) return false;
      return rows.every((row) => {
        const line = oneSpaced(row[cmd] ?? '');
        return DOCKER_INIT.test(line) || commandLines.includes(line);
      });
    } catch {
      return false;
    }
  }

  /** SIGTERM, then up to stopGraceMs for the processes to exit; never throws (the kill follows anyway). */
  private async terminateProcesses(containerIdOrName: string): Promise<void> {
    const rounds = Math.max(1, Math.ceil(this.stopGraceMs / STOP_POLL_MS));
    try {
      const result = await this.runExec(
        containerIdOrName,
        {
          command: TERMINATE_ALL_SCRIPT,
          env: { AGENTBENCH_STOP_ROUNDS: String(rounds) },
          // The script bounds itself; this only covers a daemon that does not answer.
          timeoutMs: this.stopGraceMs + KILL_EXEC_TIMEOUT_MS,
        },
        'leave',
        'skip',
      );
      // Empty: all stopped, or the container ended under the script (its start command exited).
      const left = result.stdout.trim();
      if (left !== '')
        this.log.debug(
          { container_id: containerIdOrName, grace_ms: this.stopGraceMs, left },
          'case processes still running after the stop grace; killing them',
        );
    } catch {
      // Not running (or gone): nothing to stop gracefully.
    }
  }

  /** false when the removal was already in progress elsewhere (whoever runs it finishes the job). */
  private async removeContainer(containerIdOrName: string, timeoutMs = REMOVE_TIMEOUT_MS): Promise<boolean> {
    try {
      await this.ops.run(() =>
        withDockerDeadline(
          () => this.docker.getContainer(containerIdOrName).remove({ force: true, v: true }),
          timeoutMs,
          'E_DOCKER_REMOVE_TIMEOUT',
          'docker rm -f',
        ),
      );
    } catch (err) {
      if (err instanceof DockerInfraError) throw err;
      const status = statusCode(err);
      if (status === 409 && /already in progress/i.test(errorDetail(err))) return false;
      if (status !== 404) throw new DockerInfraError('E_DOCKER_REMOVE', errorDetail(err), { cause: err });
    }
    return true;
  }

  /** null when the container does not exist. */
  async inspectState(containerId: string): Promise<ContainerState | null> {
    return (await this.inspect(containerId))?.state ?? null;
  }

  private async inspect(
    containerId: string,
    timeoutMs = DEFAULT_INSPECT_TIMEOUT_SECONDS * 1000,
  ): Promise<{ state: ContainerState; addresses: string[] } | null> {
    let info: Dockerode.ContainerInspectInfo;
    try {
      info = await withDockerDeadline(
        () => this.docker.getContainer(containerId).inspect(),
        timeoutMs,
        'E_DOCKER_INSPECT_TIMEOUT',
        'docker inspect',
      );
    } catch (err) {
      if (err instanceof DockerInfraError) throw err;
      if (statusCode(err) === 404) return null;
      throw new DockerInfraError('E_DOCKER_INSPECT', errorDetail(err), { cause: err });
    }
    const { State: state } = info;
    const finished = !state.Running && state.Status !== 'created';
    return {
      state: {
        running: state.Running,
        exitCode: finished ? state.ExitCode : null,
        oomKilled: state.OOMKilled,
      },
      addresses: Object.values(info.NetworkSettings.Networks ?? {})
        .map((n) => n.IPAddress)
        .filter((ip): ip is string => typeof ip === 'string' && ip !== ''),
    };
  }

  /** Our containers in any state, optionally narrowed to one workflow and/or case. */
  async listManagedContainers(
    filter: { workflowId?: string; runCaseId?: number } = {},
  ): Promise<ManagedContainer[]> {
    const label = [`${LABELS.managed}=true`];
    if (filter.workflowId !== undefined) label.push(`${LABELS.workflowId}=${filter.workflowId}`);
    if (filter.runCaseId !== undefined) label.push(`${LABELS.runCaseId}=${filter.runCaseId}`);
    let containers: Dockerode.ContainerInfo[];
    try {
      containers = await withDockerDeadline(
        () => this.docker.listContainers({ all: true, filters: { label } }),
        LIST_TIMEOUT_MS,
        'E_DOCKER_LIST_TIMEOUT',
        'docker ps',
      );
    } catch (err) {
      if (err instanceof DockerInfraError) throw err;
      throw new DockerInfraError('E_DOCKER_LIST', errorDetail(err), { cause: err });
    }
    return containers.map((c) => ({
      id: c.Id,
      name: (c.Names[0] ?? c.Id).replace(/^\//, ''),
      labels: c.Labels,
      createdAt: new Date(c.Created * 1000),
      state: c.State,
      networks: Object.keys(c.NetworkSettings?.Networks ?? {}),
    }));
  }

  private async writeFiles(
    containerId: string,
    files: NonNullable<CaseContainerSpec['files']>,
  ): Promise<void> {
    try {
      await withDockerDeadline(
        () => this.docker.getContainer(containerId).putArchive(tarArchive(files), { path: '/' }),
        COPY_TIMEOUT_MS,
        'E_DOCKER_COPY_TIMEOUT',
        'docker cp',
      );
    } catch (err) {
      if (err instanceof DockerInfraError) throw err;
      throw new DockerInfraError('E_SANDBOX_WRITE_FILE', errorDetail(err), { cause: err });
    }
  }

  private async startupFailure(
    containerId: string,
    detail: string,
    state: ContainerState | null,
  ): Promise<DockerInfraError> {
    if (state === null)
      return new DockerInfraError('E_CONTAINER_STARTUP_TIMEOUT', `${detail} (container disappeared)`);
    if (state.exitCode === null) return new DockerInfraError('E_CONTAINER_STARTUP_TIMEOUT', detail);
    const logs = await this.logs(containerId, STARTUP_LOG_TAIL_CHARS);
    return new DockerInfraError(
      'E_CONTAINER_STARTUP_TIMEOUT',
      `${detail} exited with code ${state.exitCode}${state.oomKilled ? ' (OOM killed)' : ''}; last logs: ${logs.trim() || '(none)'}`,
    );
  }

  /** Returns the container's addresses once it runs. */
  private async waitRunning(
    containerId: string,
    name: string,
    startup: StartupTimeouts,
    inspectMs: number,
  ): Promise<string[]> {
    const { timeoutSeconds, pollIntervalSeconds: pollSeconds } = startup;
    const deadline = Date.now() + timeoutSeconds * 1000;
    for (;;) {
      const inspected = await this.inspect(containerId, inspectMs);
      const state = inspected?.state ?? null;
      // No fixed settle delay here (it would cost every case): a start command that exits right
      // after reading as running is diagnosed by the exec that finds the container stopped.
      if (inspected?.state.running) return inspected.addresses;
      // Without a restart policy an exited container never runs again: fail now, with its story.
      if (state === null || state.exitCode !== null || Date.now() >= deadline) {
        throw await this.startupFailure(containerId, `container=${name} timeout=${timeoutSeconds}s`, state);
      }
      await delay(Math.min(pollSeconds * 1000, Math.max(0, deadline - Date.now())));
    }
  }

  /** Kills the exec's process tree in the container and waits (bounded) for the daemon to see it end. */
  private async killExec(containerId: string, exec: Dockerode.Exec, token: string, user?: string) {
    // A second round covers a process that only appeared after the first scan.
    for (let round = 0; round < 2; round++) {
      await this.killTree(containerId, token, user);
      if (await this.execEnded(exec)) return;
    }
  }

  /** Kills every process of the container carrying the exec token (KILL_BY_TOKEN_SCRIPT); never throws. */
  private async killTree(containerId: string, token: string, user?: string): Promise<void> {
    try {
      const killer = await this.runExec(
        containerId,
        {
          command: KILL_BY_TOKEN_SCRIPT,
          env: { [KILL_TOKEN_ENV]: token },
          user,
          timeoutMs: KILL_EXEC_TIMEOUT_MS,
        },
        'leave',
      );
      if (killer.exitCode !== 0) {
        this.log.warn(
          { container_id: containerId, exit_code: killer.exitCode, stderr: killer.stderr.slice(-500) },
          'could not kill exec process tree',
        );
      }
    } catch (err) {
      this.log.warn({ container_id: containerId, err: errorDetail(err) }, 'could not kill exec process tree');
    }
  }

  private async oomEventSince(containerId: string, sinceMs: number): Promise<boolean> {
    try {
      const events = await withTimeout(
        this.docker.getEvents({
          since: Math.floor(sinceMs / 1000),
          // Whole seconds only; a future `until` makes the daemon hold the stream open until then (< 1 s).
          until: Math.ceil(Date.now() / 1000),
          filters: { container: [containerId], event: ['oom'] },
        }),
        OOM_EVENTS_TIMEOUT_MS,
        'docker events',
      );
      let seen = false;
      events.on('data', () => (seen = true));
      await withTimeout(finished(events), OOM_EVENTS_TIMEOUT_MS, 'docker events');
      return seen;
    } catch (err) {
      this.log.warn({ container_id: containerId, err: errorDetail(err) }, 'could not read oom events');
      return false;
    }
  }

  private async execEnded(exec: Dockerode.Exec): Promise<boolean> {
    const deadline = Date.now() + EXEC_SETTLE_TIMEOUT_MS;
    for (;;) {
      const info = await withDockerDeadline(
        () => exec.inspect(),
        EXEC_INSPECT_TIMEOUT_MS,
        'E_DOCKER_EXEC_TIMEOUT',
        'docker exec inspect',
      ).catch(() => null);
      if (!info || !info.Running) return true;
      if (Date.now() >= deadline) return false;
      await delay(50);
    }
  }

  /** The hijacked stream can end a moment before the daemon records the exit code. */
  private async settledExitCode(exec: Dockerode.Exec): Promise<number> {
    const deadline = Date.now() + EXEC_SETTLE_TIMEOUT_MS;
    for (;;) {
      let info: Dockerode.ExecInspectInfo;
      try {
        info = await withDockerDeadline(
          () => exec.inspect(),
          EXEC_INSPECT_TIMEOUT_MS,
          'E_DOCKER_EXEC_TIMEOUT',
          'docker exec inspect',
        );
      } catch (err) {
        if (err instanceof DockerInfraError) throw err;
        throw new DockerInfraError('E_DOCKER_EXEC', errorDetail(err), { cause: err });
      }
      if (!info.Running || Date.now() >= deadline) return info.ExitCode ?? -1;
      await delay(20);
    }
  }
}

interface CallDeadlines {
  runMs: number;
  inspectMs: number;
}

/** The runtime spec's run_timeout_seconds / inspect_timeout_seconds, or their §2.3 defaults. */
function callDeadlines(startup: StartupTimeouts): CallDeadlines {
  return {
    runMs: (startup.runTimeoutSeconds ?? DEFAULT_RUN_TIMEOUT_SECONDS) * 1000,
    inspectMs: (startup.inspectTimeoutSeconds ?? DEFAULT_INSPECT_TIMEOUT_SECONDS) * 1000,
  };
}

type ExecOutcome =
  { kind: 'finished' } | { kind: 'timeout' } | { kind: 'aborted' } | { kind: 'stream-error'; error: unknown };

function raceExec(stream: Duplex, timeoutMs: number, signal?: AbortSignal): Promise<ExecOutcome> {
  return new Promise((resolve) => {
    const done = (outcome: ExecOutcome) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      resolve(outcome);
    };
    const onAbort = () => done({ kind: 'aborted' });
    const timer = setTimeout(() => done({ kind: 'timeout' }), timeoutMs);
    signal?.addEventListener('abort', onAbort, { once: true });
    stream.once('end', () => done({ kind: 'finished' }));
    stream.once('close', () => done({ kind: 'finished' }));
    stream.once('error', (error: unknown) => done({ kind: 'stream-error', error }));
    if (signal?.aborted) onAbort();
  });
}

/** Keeps the last `cap` bytes written and counts what it dropped. */
class TailCapture extends Writable {
  private chunks: Buffer[] = [];
  private size = 0;
  private dropped = 0;

  constructor(private readonly cap: number) {
    super();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    if (this.size > this.cap * 2) this.compact();
    callback();
  }

  text(): string {
    this.compact();
    const body = Buffer.concat(this.chunks).toString('utf8');
    return this.dropped > 0 ? `[truncated: first ${this.dropped} bytes dropped]\n${body}` : body;
  }

  private compact(): void {
    if (this.size <= this.cap) return;
    const all = Buffer.concat(this.chunks);
    const excess = all.length - this.cap;
    this.dropped += excess;
    this.chunks = [all.subarray(excess)];
    this.size = this.cap;
  }
}

/** Non-TTY container logs are frames: [stream, 0, 0, 0, size(uint32 BE)] + payload. */
function demuxLogBuffer(raw: Buffer | string): Buffer {
  const buf = typeof raw === 'string' ? Buffer.from(raw, 'utf8') : raw;
  const parts: Buffer[] = [];
  let offset = 0;
  while (offset + 8 <= buf.length) {
    const kind = buf[offset];
    if (kind !== 0 && kind !== 1 && kind !== 2) return buf; // not multiplexed (TTY container)
    const size = buf.readUInt32BE(offset + 4);
    parts.push(buf.subarray(offset + 8, offset + 8 + size));
    offset += 8 + size;
  }
  return Buffer.concat(parts);
}

function looksNotReady(r: ExecResult): boolean {
  if (r.exitCode === 7) return true;
  const combined = `${r.stdout}\n${r.stderr}`.toLowerCase();
  return NOT_READY_PATTERNS.some((pattern) => combined.includes(pattern));
}

function oneSpaced(commandLine: string): string {
  return commandLine.trim().replace(/\s+/g, ' ');
}

function envRecord(env: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of env) {
    const at = entry.indexOf('=');
    if (at > 0) out[entry.slice(0, at)] = entry.slice(at + 1);
  }
  return out;
}

function sortedEnv(env: Record<string, string>): string[] {
  return Object.keys(env)
    .sort()
    .map((key) => `${key}=${env[key] ?? ''}`);
}

function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw abortError(signal);
}

function abortError(signal?: AbortSignal): Error {
  const err = new Error('exec aborted', { cause: signal?.reason });
  err.name = 'AbortError';
  return err;
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms}ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
