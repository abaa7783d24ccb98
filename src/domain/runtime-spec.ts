import { z } from 'zod';
import { PermanentError } from './errors';

/**
 * `agent.runtime_spec_json` (CONTRACT §2.3) plus our own limit overrides, and the worker's defaults
 * where it is silent: resolved here, once, into the `ResolvedCaseSpec` everything downstream takes
 * (the run's activity timeout, the image pull, the case container). Validated apart from the
 * message because a bad spec fails every case of the run (§6.7) instead of dropping the message.
 * Pure.
 */

export const PULL_POLICIES = ['always', 'if-not-present', 'never'] as const;
export type PullPolicy = (typeof PULL_POLICIES)[number];

export interface RuntimeSpec {
  agentImage: string;
  caseExecCommand: string;
  afterExecCommand: string;
  sandboxStartCommand: string;
  /** Legacy start-command fallback; never template-rendered. */
  agentCommand: string | undefined;
  pullPolicy: PullPolicy;
  pullTimeoutSeconds: number;
  runTimeoutSeconds: number;
  inspectTimeoutSeconds: number;
  startupTimeoutSeconds: number;
  startupPollIntervalSeconds: number;
  dockerNetwork: string | undefined;
  /**
   * Ours: host TCP ports a case on its own network may reach besides the worker's collector and
   * its gateway (e.g. a model server on the host), at `host.docker.internal`. Empty = none.
   */
  allowHostPorts: number[];
  runtimeType: string;
  services: unknown[];
  sandbox: Record<string, unknown>;
  // Ours (undefined = use the worker's defaults).
  memoryMb: number | undefined;
  cpus: number | undefined;
  pidsLimit: number | undefined;
  caseTimeoutSeconds: number | undefined;
  user: string | undefined;
  env: Record<string, string> | undefined;
  /** The spec exactly as received, for the snapshot hash (§3.7). */
  raw: Record<string, unknown>;
}

export interface ContainerLimits {
  memoryMb: number;
  cpus: number;
  pidsLimit: number;
}

export interface ContainerHardening {
  noNewPrivileges: boolean;
  dropAllCapabilities: boolean;
}

/**
 * §2.3: how long the container may take to run, and the window of the "agent not ready" retries
 * (§6.3); with the deadlines of the Docker calls that bring it up.
 */
export interface StartupTimeouts {
  timeoutSeconds: number;
  pollIntervalSeconds: number;
  /** `run_timeout_seconds`: each of the create and start calls (the original's `docker run -d`). Absent = 60. */
  runTimeoutSeconds?: number;
  /**
   * `inspect_timeout_seconds`: each image inspect, the removal of a same-named leftover and each
   * readiness inspect. Absent = 10.
   */
  inspectTimeoutSeconds?: number;
}

/** What the worker's configuration supplies where the runtime spec says nothing. */
export interface CaseSpecDefaults {
  /** CONSUMER_CASE_TIMEOUT_SECONDS */
  caseTimeoutSeconds: number;
  /** SANDBOX_DEFAULT_MEMORY_MB, SANDBOX_DEFAULT_CPUS, SANDBOX_DEFAULT_PIDS_LIMIT */
  limits: ContainerLimits;
  /** SANDBOX_NO_NEW_PRIVILEGES, SANDBOX_DROP_ALL_CAPABILITIES (not overridable per agent) */
  hardening: ContainerHardening;
}

/** A run's runtime spec with the worker's defaults merged in: what a case container is made of. */
export interface ResolvedCaseSpec extends Omit<
  RuntimeSpec,
  | 'memoryMb'
  | 'cpus'
  | 'pidsLimit'
  | 'caseTimeoutSeconds'
  | 'startupTimeoutSeconds'
  | 'startupPollIntervalSeconds'
  | 'runTimeoutSeconds'
  | 'inspectTimeoutSeconds'
> {
  /** Each of the case command and the after command gets this long (§6.3). */
  caseTimeoutSeconds: number;
  limits: ContainerLimits;
  hardening: ContainerHardening;
  startup: StartupTimeouts;
}

export type RuntimeSpecErrorCode =
  'E_RUNTIME_SPEC_IMAGE_REQUIRED' | 'E_RUNTIME_SPEC_CASE_EXEC_REQUIRED' | 'E_SANDBOX_RUNTIME_SPEC_INVALID';

export class RuntimeSpecError extends PermanentError {
  constructor(
    readonly code: RuntimeSpecErrorCode,
    detail: string,
  ) {
    super(`${code}: ${detail}`);
    this.name = 'RuntimeSpecError';
  }
}

const SPEC_PATH = 'agent.runtime_spec_json';

/** Docker refuses a memory limit below 6 MiB. */
const DOCKER_MIN_MEMORY_MB = 6;

const DEFAULTS = {
  pullPolicy: 'if-not-present',
  pullTimeoutSeconds: 120,
  runTimeoutSeconds: 60,
  inspectTimeoutSeconds: 10,
  startupTimeoutSeconds: 30,
  startupPollIntervalSeconds: 1,
  runtimeType: 'agno_docker',
} as const;

const INTEGER_TEXT = /^[+-]?\d+$/;
const NUMBER_TEXT = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

function isBlank(value: unknown): boolean {
  return value === undefined || value === null || (typeof value === 'string' && value.trim() === '');
}

function describe(value: unknown): string {
  return JSON.stringify(value) ?? String(value);
}

/** Blank/absent → undefined; otherwise a trimmed string. */
const optionalText = z
  .unknown()
  .optional()
  .transform((value, ctx): string | undefined => {
    if (isBlank(value)) return undefined;
    if (typeof value === 'string') return value.trim();
    ctx.addIssue({ code: 'custom', message: `expected a string, got ${describe(value)}` });
    return z.NEVER;
  });

/**
 * A non-negative number given as JSON number or numeric string. Zero counts as absent, mirroring
 * the original's `int(spec.get(k) or default)`; integers truncate like Python's int().
 */
function optionalNumber(kind: 'integer' | 'number') {
  return z
    .unknown()
    .optional()
    .transform((value, ctx): number | undefined => {
      if (isBlank(value)) return undefined;
      let n = NaN;
      if (typeof value === 'number') n = kind === 'integer' ? Math.trunc(value) : value;
      if (typeof value === 'string') {
        const text = value.trim();
        if ((kind === 'integer' ? INTEGER_TEXT : NUMBER_TEXT).test(text)) n = Number(text);
      }
      const valid = kind === 'integer' ? Number.isSafeInteger(n) : Number.isFinite(n);
      if (valid && n >= 0) return n === 0 ? undefined : n;
      ctx.addIssue({ code: 'custom', message: `expected a non-negative ${kind}, got ${describe(value)}` });
      return z.NEVER;
    });
}

const ENV_NAME = /^[^=\0]+$/;

const envOverrides = z
  .unknown()
  .optional()
  .transform((value, ctx): Record<string, string> | undefined => {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'object' || Array.isArray(value)) {
      ctx.addIssue({ code: 'custom', message: `expected an object of strings, got ${describe(value)}` });
      return z.NEVER;
    }
    const env: Record<string, string> = {};
    for (const [name, v] of Object.entries(value)) {
      if (!ENV_NAME.test(name)) {
        ctx.addIssue({ code: 'custom', path: [name], message: 'not a valid environment variable name' });
        return z.NEVER;
      }
      env[name] = typeof v === 'string' ? v : JSON.stringify(v);
    }
    return env;
  });

function normalisePullPolicy(value: unknown): PullPolicy {
  const text = typeof value === 'string' ? value.trim().toLowerCase() : '';
  return (PULL_POLICIES as readonly string[]).includes(text) ? (text as PullPolicy) : DEFAULTS.pullPolicy;
}

/** A list of TCP ports, duplicates dropped; absent or null = none. */
const hostPorts = z
  .array(z.number().int().min(1).max(65535))
  .nullish()
  .transform((ports) => [...new Set(ports ?? [])]);

const specSchema = z.looseObject({
  after_exec_command: optionalText,
  sandbox_start_command: optionalText,
  agent_command: optionalText,
  pull_policy: z.unknown().optional().transform(normalisePullPolicy),
  pull_timeout_seconds: optionalNumber('integer'),
  run_timeout_seconds: optionalNumber('integer'),
  inspect_timeout_seconds: optionalNumber('integer'),
  startup_timeout_seconds: optionalNumber('integer'),
  startup_poll_interval_seconds: optionalNumber('number'),
  docker_network: optionalText,
  allow_host_ports: hostPorts,
  runtime_type: optionalText,
  services: z.array(z.unknown()).nullish(),
  sandbox: z.record(z.string(), z.unknown()).nullish(),
  memory_mb: optionalNumber('integer'),
  cpus: optionalNumber('number'),
  pids_limit: optionalNumber('integer'),
  case_timeout_seconds: optionalNumber('integer'),
  user: optionalText,
  env: envOverrides,
});

function requiredText(
  raw: Record<string, unknown>,
  key: 'agent_image' | 'case_exec_command',
  code: RuntimeSpecErrorCode,
): string {
  const value = raw[key];
  if (isBlank(value)) throw new RuntimeSpecError(code, `${SPEC_PATH}.${key}`);
  if (typeof value !== 'string') {
    throw new RuntimeSpecError('E_SANDBOX_RUNTIME_SPEC_INVALID', `${SPEC_PATH}.${key}: expected a string`);
  }
  return value.trim();
}

/** Throws RuntimeSpecError; checks the two required keys first, as the original does (§6.1). */
export function parseRuntimeSpec(raw: unknown): RuntimeSpec {
  const spec = raw === undefined || raw === null ? {} : raw;
  if (typeof spec !== 'object' || Array.isArray(spec)) {
    throw new RuntimeSpecError('E_SANDBOX_RUNTIME_SPEC_INVALID', `${SPEC_PATH}: expected an object`);
  }
  const rawSpec = spec as Record<string, unknown>;
  const agentImage = requiredText(rawSpec, 'agent_image', 'E_RUNTIME_SPEC_IMAGE_REQUIRED');
  const caseExecCommand = requiredText(rawSpec, 'case_exec_command', 'E_RUNTIME_SPEC_CASE_EXEC_REQUIRED');

  const parsed = specSchema.safeParse(rawSpec);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const path = [SPEC_PATH, ...(issue?.path ?? []).map(String)].join('.');
    throw new RuntimeSpecError('E_SANDBOX_RUNTIME_SPEC_INVALID', `${path}: ${issue?.message ?? 'invalid'}`);
  }
  const s = parsed.data;
  return {
    agentImage,
    caseExecCommand,
    afterExecCommand: s.after_exec_command ?? '',
    sandboxStartCommand: s.sandbox_start_command ?? '',
    agentCommand: s.agent_command,
    pullPolicy: s.pull_policy,
    pullTimeoutSeconds: s.pull_timeout_seconds ?? DEFAULTS.pullTimeoutSeconds,
    runTimeoutSeconds: s.run_timeout_seconds ?? DEFAULTS.runTimeoutSeconds,
    inspectTimeoutSeconds: s.inspect_timeout_seconds ?? DEFAULTS.inspectTimeoutSeconds,
    startupTimeoutSeconds: s.startup_timeout_seconds ?? DEFAULTS.startupTimeoutSeconds,
    startupPollIntervalSeconds: s.startup_poll_interval_seconds ?? DEFAULTS.startupPollIntervalSeconds,
    dockerNetwork: s.docker_network,
    allowHostPorts: s.allow_host_ports,
    runtimeType: s.runtime_type ?? DEFAULTS.runtimeType,
    services: s.services ?? [],
    sandbox: s.sandbox ?? {},
    memoryMb: s.memory_mb,
    cpus: s.cpus,
    pidsLimit: s.pids_limit,
    caseTimeoutSeconds: s.case_timeout_seconds,
    user: s.user,
    env: s.env,
    raw: rawSpec,
  };
}

/** The runtime spec with the worker's defaults: throws RuntimeSpecError like parseRuntimeSpec. */
export function resolveCaseSpec(raw: unknown, defaults: CaseSpecDefaults): ResolvedCaseSpec {
  const {
    memoryMb,
    cpus,
    pidsLimit,
    caseTimeoutSeconds,
    startupTimeoutSeconds,
    startupPollIntervalSeconds,
    runTimeoutSeconds,
    inspectTimeoutSeconds,
    ...spec
  } = parseRuntimeSpec(raw);
  const limits: ContainerLimits = {
    memoryMb: memoryMb ?? defaults.limits.memoryMb,
    cpus: cpus ?? defaults.limits.cpus,
    pidsLimit: pidsLimit ?? defaults.limits.pidsLimit,
  };
  if (limits.memoryMb < DOCKER_MIN_MEMORY_MB) {
    throw new RuntimeSpecError(
      'E_SANDBOX_RUNTIME_SPEC_INVALID',
      `${SPEC_PATH}.memory_mb: at least ${DOCKER_MIN_MEMORY_MB} (Docker's floor), got ${limits.memoryMb}`,
    );
  }
  return {
    ...spec,
    caseTimeoutSeconds: caseTimeoutSeconds ?? defaults.caseTimeoutSeconds,
    limits,
    hardening: defaults.hardening,
    startup: {
      timeoutSeconds: startupTimeoutSeconds,
      pollIntervalSeconds: startupPollIntervalSeconds,
      // 0 would be a deadline nothing can meet: the default instead.
      runTimeoutSeconds: runTimeoutSeconds || DEFAULTS.runTimeoutSeconds,
      inspectTimeoutSeconds: inspectTimeoutSeconds || DEFAULTS.inspectTimeoutSeconds,
    },
  };
}

/** Docker-call deadlines where no runtime spec says otherwise (§2.3 defaults). */
export const DEFAULT_RUN_TIMEOUT_SECONDS = DEFAULTS.runTimeoutSeconds;
export const DEFAULT_INSPECT_TIMEOUT_SECONDS = DEFAULTS.inspectTimeoutSeconds;
export const DEFAULT_PULL_TIMEOUT_SECONDS = DEFAULTS.pullTimeoutSeconds;

/** The startup window of a spec that cannot be resolved (its run fails in prepareRun). */
export const DEFAULT_STARTUP_TIMEOUT_SECONDS = DEFAULTS.startupTimeoutSeconds;
