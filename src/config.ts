import { createHash } from 'node:crypto';
import { homedir } from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { PULL_POLICIES, type CaseSpecDefaults } from './domain/runtime-spec';

/**
 * The one place that reads process.env. Names and defaults follow CONTRACT §9 so an existing
 * deployment's environment works unchanged; everything after the contract block is ours.
 */

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

// Python's config reads "" as unset, so do we.
const blankToUndefined = (v: unknown) => (typeof v === 'string' && v.trim() === '' ? undefined : v);

const intVar = (def: number, min = 0) =>
  z.preprocess(
    blankToUndefined,
    z
      .string()
      .trim()
      .regex(/^-?\d+$/, `an integer >= ${min}`)
      .transform(Number)
      .pipe(z.number().int().min(min, `an integer >= ${min}`))
      .default(def),
  );

const floatVar = (def: number) =>
  z.preprocess(
    blankToUndefined,
    z
      .string()
      .trim()
      .regex(/^\d+(\.\d+)?$/, 'a non-negative number')
      .transform(Number)
      .default(def),
  );

/** A TCP port, 0 included (each variable says what 0 means); undefined when unset. */
const optPort = () =>
  z.preprocess(
    blankToUndefined,
    z
      .string()
      .trim()
      .regex(/^\d+$/, 'a port number 0-65535')
      .transform(Number)
      .pipe(z.number().int().max(65535, 'a port number 0-65535'))
      .optional(),
  );

/** `8080,11434`: TCP ports 1-65535, comma-separated; unset = none. */
const portListVar = () =>
  z.preprocess(
    blankToUndefined,
    z
      .string()
      .trim()
      .regex(/^\d+(\s*,\s*\d+)*$/, 'comma-separated port numbers 1-65535')
      .transform((v) => [...new Set(v.split(',').map((p) => Number(p.trim())))])
      .pipe(z.array(z.number().int().min(1).max(65535, 'port numbers 1-65535')))
      .default([]),
  );

const strVar = (def: string) => z.preprocess(blankToUndefined, z.string().trim().default(def));
const optStr = () => z.preprocess(blankToUndefined, z.string().optional());
const boolVar = (def: boolean) =>
  z.preprocess(
    blankToUndefined,
    z
      .enum(['true', 'false', '1', '0', 'yes', 'no'], 'one of true/false')
      .transform((v) => v === 'true' || v === '1' || v === 'yes')
      .default(def),
  );

const pullPolicy = z.preprocess(
  blankToUndefined,
  z
    .string()
    .trim()
    .toLowerCase()
    .pipe(z.enum(PULL_POLICIES, `one of ${PULL_POLICIES.join(', ')}`))
    .default('always'),
);

/** Usable as a Docker label value, a Temporal keyword and part of a name. */
const DEPLOYMENT_ID = /^[a-z0-9][a-z0-9-]{0,62}$/;

const envSchema = z.object({
  // --- CONTRACT §9 ---
  RABBITMQ_HOST: optStr(),
  RABBITMQ_PORT: intVar(5672, 1),
  RABBITMQ_USER: optStr(),
  RABBITMQ_PASSWORD: optStr(),
  RABBITMQ_VHOST: strVar('/'),
  RABBITMQ_EXPERIMENT_QUEUE: strVar('haitai.agent.benchmark.experiment'),
  CONSUMER_CONCURRENT_CASES: intVar(2, 1),
  CONSUMER_SCORER_CONCURRENT_CASES: intVar(2, 1),
  CONSUMER_MAX_RETRIES: intVar(3, 1),
  CONSUMER_CASE_TIMEOUT_SECONDS: intVar(180, 1),
  // Accepted for compatibility: validated as §9 says (a bad value stops the process at start), never
  // read. They steered only the original's legacy runner; in its production path, as in ours, the
  // agent's runtime_spec_json decides (docker_network, pull_policy, the *_timeout_seconds).
  CONSUMER_DOCKER_NETWORK: optStr(),
  CONSUMER_AGENT_EXEC_COMMAND: optStr(),
  CONSUMER_DOCKER_PULL_POLICY: pullPolicy,
  CONSUMER_DOCKER_PULL_TIMEOUT_SECONDS: intVar(120, 1),
  CONSUMER_DOCKER_RUN_TIMEOUT_SECONDS: intVar(60, 1),
  CONSUMER_DOCKER_INSPECT_TIMEOUT_SECONDS: intVar(10, 1),
  REDIS_HOST: optStr(),
  REDIS_PORT: intVar(6379, 1),
  REDIS_USERNAME: optStr(),
  REDIS_PASSWORD: optStr(),
  REDIS_DB: intVar(0, 0),
  CONSUMER_REDIS_PROCESSING_LOCK_TTL_SECONDS: intVar(300, 1),
  CONSUMER_REDIS_PROCESSED_TTL_SECONDS: intVar(86400, 1),
  DATABASE_ENGINE: optStr(),
  DATEBASE_ENGINE: optStr(),
  POSTGRES_SERVER: optStr(),
  POSTGRES_PORT: intVar(5432, 1),
  POSTGRES_USER: optStr(),
  POSTGRES_PASSWORD: optStr(),
  POSTGRES_DB: optStr(),
  // Accepted for compatibility, never read: the original sets connect and read timeouts on every call (§9).
  CONSUMER_EVALUATOR_TIMEOUT_SECONDS: intVar(90, 0),
  CONSUMER_EVALUATOR_CONNECT_TIMEOUT_SECONDS: intVar(15, 0),
  CONSUMER_EVALUATOR_READ_TIMEOUT_SECONDS: intVar(90, 0),
  CONSUMER_EVALUATOR_MAX_RETRIES: intVar(2, 0),
  CONSUMER_EVALUATOR_RETRY_BACKOFF_SECONDS: floatVar(1.0),
  CONSUMER_SCORER_HARD_TIMEOUT_SECONDS: intVar(120, 1),
  // --- ours ---
  DATABASE_URL: optStr(),
  DATABASE_POOL_MAX: intVar(10, 1),
  TEMPORAL_ADDRESS: strVar('127.0.0.1:7233'),
  TEMPORAL_NAMESPACE: strVar('default'),
  TEMPORAL_TASK_QUEUE: strVar('agentbench-cases'),
  TEMPORAL_UI_URL: strVar('http://127.0.0.1:8233'),
  AGENTBENCH_DEPLOYMENT_ID: z.preprocess(
    blankToUndefined,
    z
      .string()
      .trim()
      .regex(
        DEPLOYMENT_ID,
        'lowercase letters, digits and dashes, 1-63 characters, starting with a letter or digit',
      )
      .optional(),
  ),
  AGENTBENCH_STATE_DIR: optStr(),
  BRIDGE_PREFETCH: intVar(16, 1),
  BRIDGE_START_MAX_ATTEMPTS: intVar(5, 1),
  WORKER_MAX_CONCURRENT_ACTIVITIES: intVar(32, 1),
  WORKER_SHUTDOWN_GRACE_SECONDS: intVar(0, 0),
  // Tests only: a pause point for fault tests (activities/case-execution.ts); 0 = none.
  AGENTBENCH_FAULT_PAUSE_AFTER_CASE_EXEC_MS: intVar(0, 0),
  WORKFLOW_BUNDLE_PATH: optStr(),
  DOCKER_SOCKET_PATH: strVar('/var/run/docker.sock'),
  DOCKER_MAX_CONCURRENT_OPERATIONS: intVar(8, 1),
  DOCKER_MAX_LIVE_CONTAINERS: intVar(16, 1),
  SANDBOX_DEFAULT_MEMORY_MB: intVar(2048, 16),
  SANDBOX_DEFAULT_CPUS: floatVar(1.0),
  SANDBOX_DEFAULT_PIDS_LIMIT: intVar(512, 16),
  SANDBOX_NO_NEW_PRIVILEGES: boolVar(true),
  SANDBOX_DROP_ALL_CAPABILITIES: boolVar(true),
  SANDBOX_ISOLATE_CASES: boolVar(true),
  SANDBOX_WARM_POOL_SIZE: intVar(0, 0),
  SANDBOX_WARM_POOL_IDLE_SECONDS: intVar(60, 1),
  SANDBOX_HOST_PORTS: portListVar(),
  SANDBOX_REAPER_INTERVAL_SECONDS: intVar(60, 1),
  SANDBOX_REAPER_MIN_AGE_SECONDS: intVar(120, 0),
  RUN_RECONCILER_INTERVAL_SECONDS: intVar(60, 1),
  RUN_RECONCILER_MIN_IDLE_SECONDS: intVar(30, 0),
  SANDBOX_CASE_FILES: z.preprocess(
    blankToUndefined,
    z
      .string()
      .trim()
      .toLowerCase()
      .pipe(z.enum(['auto', 'bind', 'copy'], 'one of auto, bind, copy'))
      .default('auto'),
  ),
  SANDBOX_CASE_FILES_DIR: optStr(),
  SANDBOX_RUNTIME: z.preprocess(
    blankToUndefined,
    z
      .string()
      .trim()
      .regex(/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/, 'a Docker runtime name (e.g. runc, crun)')
      .optional(),
  ),
  OTEL_COLLECTOR_PORT: intVar(14318, 0),
  OTEL_FLUSH_GRACE_MS: intVar(1000, 0),
  OTEL_COLLECTOR_HOST: strVar('0.0.0.0'),
  OTEL_MAX_BODY_BYTES: intVar(16 * 1024 * 1024, 1024),
  OTEL_ALLOW_UNTOKENED_INGEST: boolVar(false),
  OTEL_INGEST_ANY_CONTENT_TYPE: boolVar(false),
  MOCK_GATEWAY_BIND_HOST: optStr(),
  MOCK_GATEWAY_ADVERTISED_HOST: strVar('host.docker.internal'),
  MOCK_GATEWAY_CA_DIR: optStr(),
  MOCK_GATEWAY_SEALED: boolVar(true),
  MOCK_PYTHON_TIMEOUT_MS: intVar(5000, 100),
  MOCK_PYTHON_MEMORY_MB: intVar(256, 32),
  MOCK_PYTHON_IMAGE: strVar('bench/agent-base:bookworm'),
  LLM_BASE_URL: optStr(),
  LLM_MODEL: optStr(),
  LLM_API_KEY: optStr(),
  RESULT_CACHE_TTL_SECONDS: intVar(7 * 24 * 3600, 1),
  METRICS_PORT: optPort(),
  METRICS_HOST: strVar('0.0.0.0'),
  TEMPORAL_METRICS_PORT: optPort(),
  // Checked in parseTracing, whose errors never echo the value (headers carry credentials).
  ORCHESTRATOR_OTLP_ENDPOINT: optStr(),
  ORCHESTRATOR_OTLP_HEADERS: optStr(),
  RESULT_EVENTS_ENABLED: boolVar(true),
  RESULT_EVENTS_EXCHANGE: strVar('agentbench.results'),
  RESULT_EVENTS_RETENTION_DAYS: intVar(7, 1),
  API_HOST: strVar('127.0.0.1'),
  API_PORT: intVar(8080, 0),
  // Checked in parseApiTokens, whose errors never echo the value (they are credentials).
  API_TOKENS: optStr(),
  // Checked in parseSecretsKey, whose errors never echo the value.
  AGENTBENCH_SECRETS_KEY: optStr(),
  API_READ_TOKENS: optStr(),
  API_ALLOW_ANONYMOUS: boolVar(false),
  API_MAX_BODY_BYTES: intVar(5 * 1024 * 1024, 1024),
  API_MAX_EVENT_STREAMS: intVar(256, 1),
  LOG_LEVEL: z.preprocess(
    blankToUndefined,
    z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  ),
});

/** Every environment variable loadConfig reads (deploy tests check each is set or its default fits). */
export const CONFIG_VARIABLES: readonly string[] = Object.keys(envSchema.shape);

export interface Config {
  /**
   * The built-in runtimes' model (scripts/runtimes): endpoint and model reach their containers as
   * env; the key only as the container's env, never in a row, a log line or a payload.
   */
  llm: { baseUrl: string | undefined; model: string | undefined; apiKey: string | undefined };
  /** How long a stored result may be reused (`runtime_spec_json.cache`, task batches). */
  resultCache: { ttlSeconds: number };
  rabbitmq: {
    host: string | undefined;
    port: number;
    user: string | undefined;
    password: string | undefined;
    vhost: string;
    queue: string;
    prefetch: number;
    /** Deliveries of one message whose workflow start failed transiently before it is dead-lettered. */
    startMaxAttempts: number;
  };
  consumer: {
    concurrentCases: number;
    scorerConcurrentCases: number;
    maxRetries: number;
    caseTimeoutSeconds: number;
  };
  redis: {
    host: string | undefined;
    port: number;
    username: string | undefined;
    password: string | undefined;
    db: number;
    processingLockTtlSeconds: number;
    processedTtlSeconds: number;
  };
  database: {
    engine: 'postgres' | 'mysql';
    /** DATABASE_URL, or built from POSTGRES_*; undefined when neither is configured. */
    url: string | undefined;
    poolMax: number;
  };
  evaluator: {
    connectTimeoutSeconds: number;
    readTimeoutSeconds: number;
    maxRetries: number;
    retryBackoffSeconds: number;
    scorerHardTimeoutSeconds: number;
  };
  temporal: { address: string; namespace: string; taskQueue: string; uiUrl: string };
  /**
   * Which deployment this process belongs to: AGENTBENCH_DEPLOYMENT_ID, else derived from the Temporal
   * namespace, task queue and the platform database's identity (host, port, database name). Runs and
   * containers of one deployment are told apart from another's sharing a namespace or a Docker host
   * by it.
   */
  deploymentId: string;
  /** State and logs of the local services (scripts/setup, and the Temporal dev server `benchctl run` starts). */
  stateDir: string;
  worker: {
    maxConcurrentActivities: number;
    workflowBundlePath: string | undefined;
    /**
     * After SIGTERM, how long in-flight activities may still finish before they are canceled
     * (containers removed, the attempt retried by another worker). 0 = cancel at once.
     */
    shutdownGraceSeconds: number;
    /** Tests only (AGENTBENCH_FAULT_PAUSE_AFTER_CASE_EXEC_MS): the container phase stands still after its case command. */
    faultPauseAfterCaseExecMs: number;
  };
  docker: { socketPath: string; maxConcurrentOperations: number; maxLiveContainers: number };
  sandbox: {
    defaultMemoryMb: number;
    defaultCpus: number;
    defaultPidsLimit: number;
    noNewPrivileges: boolean;
    dropAllCapabilities: boolean;
    /** A Docker network of its own per case (src/docker/isolated-network), unless its spec names one. */
    isolateCases: boolean;
    /** Host TCP ports every case on its own network may reach (e.g. an LLM server on the host). */
    hostPorts: number[];
    reaperIntervalSeconds: number;
    reaperMinAgeSeconds: number;
    /** The run reconciler's sweep (src/temporal/run-reconciler.ts): how often, and how long a row must be unchanged. */
    reconcilerIntervalSeconds: number;
    reconcilerMinIdleSeconds: number;
    /** How /benchmark/* reaches a container (see DockerSandbox); dir undefined = <tmpdir>/agentbench-case-files. */
    caseFiles: { delivery: 'auto' | 'bind' | 'copy'; dir: string | undefined };
    /** The OCI runtime of case containers, as registered with dockerd; undefined = the daemon's default. */
    runtime: string | undefined;
    /**
     * Warm sandboxes (src/docker/warm-pool.ts): containers kept started per template while its
     * cases keep coming (size 0 = off), drained after idleSeconds without a claim.
     */
    warmPool: { size: number; idleSeconds: number };
  };
  otel: {
    collectorHost: string;
    collectorPort: number;
    flushGraceMs: number;
    maxBodyBytes: number;
    allowUntokenedIngest: boolean;
    anyContentType: boolean;
  };
  mockGateway: {
    /** undefined = the docker0 address (what host.docker.internal resolves to); never 0.0.0.0 by default. */
    bindHost: string | undefined;
    advertisedHost: string;
    caDir: string | undefined;
    sealPassthroughFalse: boolean;
    pythonTimeoutMs: number;
    pythonMemoryMb: number;
    /** The image of the per-case python handler sandboxes (any image with python3). */
    pythonImage: string;
  };
  metrics: {
    /** METRICS_PORT; undefined = the command's default (DEFAULT_METRICS_PORTS), 0 = no metrics endpoint. */
    port: number | undefined;
    host: string;
    /** The Temporal core's own Prometheus exporter (worker only); 0 = off. */
    temporalPort: number;
  };
  /** OTel traces of the orchestrator itself (src/tracing); not the agents' OTLP collector above. */
  tracing: {
    /** Full OTLP/HTTP traces URL (`…/v1/traces`); undefined = tracing off. */
    endpoint: string | undefined;
    /** Sent with every export; credentials, so never logged. */
    headers: Readonly<Record<string, string>>;
  };
  /**
   * Result events (src/result-events): one per case reaching a terminal status and one per run that
   * ends, written to an outbox in the same transaction and relayed to a RabbitMQ topic exchange.
   */
  resultEvents: {
    /** false: nothing is written to the outbox and nothing is published. */
    enabled: boolean;
    exchange: string;
    /** Published events are pruned from the outbox after this many days. */
    retentionDays: number;
  };
  /** `benchctl api` (src/api). */
  api: {
    host: string;
    port: number;
    /** Tokens that may call every route; digests only, never the secrets themselves. */
    tokens: readonly ApiToken[];
    /** Tokens that may only read (GET); a write with one is answered 403. */
    readTokens: readonly ApiToken[];
    /** Requests without a token are accepted, from loopback addresses only (local development). */
    allowAnonymous: boolean;
    maxBodyBytes: number;
    maxEventStreams: number;
  };
  /**
   * AGENTBENCH_SECRETS_KEY: the AES-256 key that seals the secret-named values of a stored run input
   * (src/db/run-input-secrets.ts) so the workers can run agents with their credentials while no row
   * holds them in clear. Unset = such values are stored redacted and never reach the agent.
   */
  secretsKey: Buffer | undefined;
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
}

/** A bearer token of API_TOKENS / API_READ_TOKENS: its name (for logs) and the SHA-256 of its secret. */
export interface ApiToken {
  name: string;
  sha256: Buffer;
}

function buildPostgresUrl(e: z.output<typeof envSchema>): string | undefined {
  if (e.DATABASE_URL) return e.DATABASE_URL;
  if (!e.POSTGRES_SERVER || !e.POSTGRES_USER || !e.POSTGRES_DB) return undefined;
  const auth = e.POSTGRES_PASSWORD
    ? `${encodeURIComponent(e.POSTGRES_USER)}:${encodeURIComponent(e.POSTGRES_PASSWORD)}`
    : encodeURIComponent(e.POSTGRES_USER);
  return `postgres://${auth}@${e.POSTGRES_SERVER}:${e.POSTGRES_PORT}/${encodeURIComponent(e.POSTGRES_DB)}`;
}

/**
 * `auto-<12 hex>` of namespace, task queue and database host:port/name (never its credentials): two
 * platform databases served in one namespace get different ids without anyone configuring them,
 * and every process of one deployment (worker, bridge, CLI) derives the same one.
 */
function deriveDeploymentId(namespace: string, taskQueue: string, databaseUrl: string | undefined): string {
  let database = 'local';
  if (databaseUrl) {
    try {
      const u = new URL(databaseUrl);
      database = `${u.hostname}:${u.port || '5432'}${u.pathname}`;
    } catch {
      // A libpq key=value string: hash it without the password.
      database = databaseUrl.replace(/password\s*=\s*\S+/gi, '');
    }
  }
  const digest = createHash('sha256').update(`${namespace}\n${taskQueue}\n${database}`).digest('hex');
  return `auto-${digest.slice(0, 12)}`;
}

/** An HTTP header name (RFC 9110 token). */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * ORCHESTRATOR_OTLP_*: the same syntax as the standard OTEL_EXPORTER_OTLP_* variables, under names
 * of our own because those standard names are what case containers get for their agents. Errors
 * name the variable but never show the value: headers (and a URL with userinfo) carry credentials.
 */
function parseTracing(endpointRaw: string | undefined, headersRaw: string | undefined): Config['tracing'] {
  if (endpointRaw === undefined) return { endpoint: undefined, headers: {} };
  const badEndpoint = (why: string) =>
    new ConfigError(
      'ORCHESTRATOR_OTLP_ENDPOINT',
      `Invalid env var ORCHESTRATOR_OTLP_ENDPOINT: expected ${why} (value not shown)`,
    );
  let url: URL;
  try {
    url = new URL(endpointRaw.trim());
  } catch {
    throw badEndpoint('an http(s) URL such as http://otel-collector:4318');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw badEndpoint('an http(s) URL such as http://otel-collector:4318');
  // The exporter would silently drop userinfo; credentials belong in ORCHESTRATOR_OTLP_HEADERS.
  if (url.username || url.password)
    throw badEndpoint('a URL without user:password@ (put credentials in ORCHESTRATOR_OTLP_HEADERS)');
  // The exporter posts to the path alone: a query or fragment would be dropped without a word.
  if (url.search || url.hash) throw badEndpoint('a URL without ?query or #fragment');
  // OTLP/HTTP convention: a base URL gets the signal path appended, a URL that names it is kept.
  if (!url.pathname.endsWith('/v1/traces')) url.pathname = `${url.pathname.replace(/\/+$/, '')}/v1/traces`;

  const headers: Record<string, string> = {};
  for (const pair of (headersRaw ?? '').split(',')) {
    if (pair.trim() === '') continue;
    const eq = pair.indexOf('=');
    const name = (eq < 0 ? pair : pair.slice(0, eq)).trim();
    let value: string | undefined;
    try {
      value = eq < 0 ? undefined : decodeURIComponent(pair.slice(eq + 1).trim());
    } catch {
      value = undefined;
    }
    if (!HEADER_NAME.test(name) || value === undefined) {
      throw new ConfigError(
        'ORCHESTRATOR_OTLP_HEADERS',
        'Invalid env var ORCHESTRATOR_OTLP_HEADERS: expected comma-separated name=value pairs, values URL-encoded (value not shown)',
      );
    }
    headers[name.toLowerCase()] = value;
  }
  return { endpoint: url.toString(), headers };
}

const TOKEN_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
const SHA256_HEX = /^sha256:([0-9a-f]{64})$/;
/** Shorter secrets are refused: a bearer token is all that stands between the network and a run start. */
const MIN_API_TOKEN_LENGTH = 16;

/**
 * API_TOKENS / API_READ_TOKENS: comma-separated `name:secret` entries, where the secret is the token
 * itself or `sha256:<64 hex>` of it (so the environment need not hold the token). Only digests are
 * kept. Errors name the variable and the entry's position, never a value.
 */
export function parseApiTokens(variable: string, raw: string | undefined): ApiToken[] {
  const tokens: ApiToken[] = [];
  const entries = (raw ?? '').split(',').filter((e) => e.trim() !== '');
  entries.forEach((entry, i) => {
    const bad = (why: string) =>
      new ConfigError(variable, `Invalid env var ${variable}: entry ${i + 1} ${why} (value not shown)`);
    const colon = entry.indexOf(':');
    if (colon < 0) throw bad('is not name:secret');
    const name = entry.slice(0, colon).trim();
    const secret = entry.slice(colon + 1).trim();
    if (!TOKEN_NAME.test(name)) throw bad('has a name that is not 1-64 letters, digits, _ . -');
    const digest = SHA256_HEX.exec(secret);
    if (digest?.[1]) {
      tokens.push({ name, sha256: Buffer.from(digest[1], 'hex') });
      return;
    }
    if (secret.startsWith('sha256:')) throw bad('has a sha256: secret that is not 64 lowercase hex digits');
    if (secret.length < MIN_API_TOKEN_LENGTH)
      throw bad(`has a secret shorter than ${MIN_API_TOKEN_LENGTH} characters`);
    tokens.push({ name, sha256: createHash('sha256').update(secret).digest() });
  });
  return tokens;
}

/**
 * AGENTBENCH_SECRETS_KEY: 32 bytes, as 64 hex digits or base64 (`openssl rand -base64 32`). Errors
 * name the variable, never the value.
 */
export function parseSecretsKey(raw: string | undefined): Buffer | undefined {
  if (raw === undefined) return undefined;
  const v = raw.trim();
  const key = /^[0-9a-fA-F]{64}$/.test(v) ? Buffer.from(v, 'hex') : Buffer.from(v, 'base64');
  if (key.length !== 32 || (!/^[0-9a-fA-F]{64}$/.test(v) && key.toString('base64') !== v)) {
    throw new ConfigError(
      'AGENTBENCH_SECRETS_KEY',
      'Invalid env var AGENTBENCH_SECRETS_KEY: expected 32 bytes as 64 hex digits or base64 (value not shown)',
    );
  }
  return key;
}

/** Addresses that only this machine can reach: anonymous API access is allowed on these alone. */
export function isLoopbackHost(host: string): boolean {
  const h = host
    .trim()
    .toLowerCase()
    .replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h) || h === '::ffff:127.0.0.1';
}

function parseApi(e: z.output<typeof envSchema>): Config['api'] {
  const api: Config['api'] = {
    host: e.API_HOST,
    port: e.API_PORT,
    tokens: parseApiTokens('API_TOKENS', e.API_TOKENS),
    readTokens: parseApiTokens('API_READ_TOKENS', e.API_READ_TOKENS),
    allowAnonymous: e.API_ALLOW_ANONYMOUS,
    maxBodyBytes: e.API_MAX_BODY_BYTES,
    maxEventStreams: e.API_MAX_EVENT_STREAMS,
  };
  if (api.allowAnonymous && !isLoopbackHost(api.host)) {
    throw new ConfigError(
      'API_ALLOW_ANONYMOUS',
      `Invalid env var API_ALLOW_ANONYMOUS: true is only allowed with a loopback API_HOST (got API_HOST=${JSON.stringify(api.host)})`,
    );
  }
  return api;
}

/** Parses and validates the environment. Throws ConfigError naming the first bad variable. */
export function loadConfig(env: Env = process.env): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const variable = String(issue?.path[0] ?? 'environment');
    const got = env[variable];
    throw new ConfigError(
      variable,
      `Invalid env var ${variable}: expected ${issue?.message ?? 'a valid value'}, got ${JSON.stringify(got)}`,
    );
  }
  const e = parsed.data;
  const engineRaw = (e.DATEBASE_ENGINE ?? e.DATABASE_ENGINE ?? 'postgres').trim().toLowerCase();
  if (engineRaw !== 'postgres' && engineRaw !== 'mysql') {
    throw new ConfigError(
      'DATABASE_ENGINE',
      `Invalid env var DATABASE_ENGINE: expected postgres or mysql, got ${JSON.stringify(engineRaw)}`,
    );
  }
  return {
    rabbitmq: {
      host: e.RABBITMQ_HOST,
      port: e.RABBITMQ_PORT,
      user: e.RABBITMQ_USER,
      password: e.RABBITMQ_PASSWORD,
      vhost: e.RABBITMQ_VHOST,
      queue: e.RABBITMQ_EXPERIMENT_QUEUE,
      prefetch: e.BRIDGE_PREFETCH,
      startMaxAttempts: e.BRIDGE_START_MAX_ATTEMPTS,
    },
    consumer: {
      concurrentCases: e.CONSUMER_CONCURRENT_CASES,
      scorerConcurrentCases: e.CONSUMER_SCORER_CONCURRENT_CASES,
      maxRetries: e.CONSUMER_MAX_RETRIES,
      caseTimeoutSeconds: e.CONSUMER_CASE_TIMEOUT_SECONDS,
    },
    redis: {
      host: e.REDIS_HOST,
      port: e.REDIS_PORT,
      username: e.REDIS_USERNAME,
      password: e.REDIS_PASSWORD,
      db: e.REDIS_DB,
      processingLockTtlSeconds: e.CONSUMER_REDIS_PROCESSING_LOCK_TTL_SECONDS,
      processedTtlSeconds: e.CONSUMER_REDIS_PROCESSED_TTL_SECONDS,
    },
    database: { engine: engineRaw, url: buildPostgresUrl(e), poolMax: e.DATABASE_POOL_MAX },
    evaluator: {
      connectTimeoutSeconds: e.CONSUMER_EVALUATOR_CONNECT_TIMEOUT_SECONDS,
      readTimeoutSeconds: e.CONSUMER_EVALUATOR_READ_TIMEOUT_SECONDS,
      maxRetries: e.CONSUMER_EVALUATOR_MAX_RETRIES,
      retryBackoffSeconds: e.CONSUMER_EVALUATOR_RETRY_BACKOFF_SECONDS,
      scorerHardTimeoutSeconds: e.CONSUMER_SCORER_HARD_TIMEOUT_SECONDS,
    },
    temporal: {
      address: e.TEMPORAL_ADDRESS,
      namespace: e.TEMPORAL_NAMESPACE,
      taskQueue: e.TEMPORAL_TASK_QUEUE,
      uiUrl: e.TEMPORAL_UI_URL.replace(/\/+$/, ''),
    },
    deploymentId:
      e.AGENTBENCH_DEPLOYMENT_ID ??
      deriveDeploymentId(e.TEMPORAL_NAMESPACE, e.TEMPORAL_TASK_QUEUE, buildPostgresUrl(e)),
    stateDir: e.AGENTBENCH_STATE_DIR ?? path.join(homedir(), '.local', 'state', 'agentbench'),
    worker: {
      maxConcurrentActivities: e.WORKER_MAX_CONCURRENT_ACTIVITIES,
      workflowBundlePath: e.WORKFLOW_BUNDLE_PATH,
      shutdownGraceSeconds: e.WORKER_SHUTDOWN_GRACE_SECONDS,
      faultPauseAfterCaseExecMs: e.AGENTBENCH_FAULT_PAUSE_AFTER_CASE_EXEC_MS,
    },
    docker: {
      socketPath: e.DOCKER_SOCKET_PATH,
      maxConcurrentOperations: e.DOCKER_MAX_CONCURRENT_OPERATIONS,
      maxLiveContainers: e.DOCKER_MAX_LIVE_CONTAINERS,
    },
    sandbox: {
      defaultMemoryMb: e.SANDBOX_DEFAULT_MEMORY_MB,
      defaultCpus: e.SANDBOX_DEFAULT_CPUS,
      defaultPidsLimit: e.SANDBOX_DEFAULT_PIDS_LIMIT,
      noNewPrivileges: e.SANDBOX_NO_NEW_PRIVILEGES,
      dropAllCapabilities: e.SANDBOX_DROP_ALL_CAPABILITIES,
      isolateCases: e.SANDBOX_ISOLATE_CASES,
      hostPorts: e.SANDBOX_HOST_PORTS,
      reaperIntervalSeconds: e.SANDBOX_REAPER_INTERVAL_SECONDS,
      reaperMinAgeSeconds: e.SANDBOX_REAPER_MIN_AGE_SECONDS,
      reconcilerIntervalSeconds: e.RUN_RECONCILER_INTERVAL_SECONDS,
      reconcilerMinIdleSeconds: e.RUN_RECONCILER_MIN_IDLE_SECONDS,
      caseFiles: { delivery: e.SANDBOX_CASE_FILES, dir: e.SANDBOX_CASE_FILES_DIR },
      runtime: e.SANDBOX_RUNTIME,
      warmPool: { size: e.SANDBOX_WARM_POOL_SIZE, idleSeconds: e.SANDBOX_WARM_POOL_IDLE_SECONDS },
    },
    otel: {
      collectorHost: e.OTEL_COLLECTOR_HOST,
      collectorPort: e.OTEL_COLLECTOR_PORT,
      flushGraceMs: e.OTEL_FLUSH_GRACE_MS,
      maxBodyBytes: e.OTEL_MAX_BODY_BYTES,
      allowUntokenedIngest: e.OTEL_ALLOW_UNTOKENED_INGEST,
      anyContentType: e.OTEL_INGEST_ANY_CONTENT_TYPE,
    },
    llm: { baseUrl: e.LLM_BASE_URL, model: e.LLM_MODEL, apiKey: e.LLM_API_KEY },
    resultCache: { ttlSeconds: e.RESULT_CACHE_TTL_SECONDS },
    mockGateway: {
      bindHost: e.MOCK_GATEWAY_BIND_HOST,
      advertisedHost: e.MOCK_GATEWAY_ADVERTISED_HOST,
      caDir: e.MOCK_GATEWAY_CA_DIR,
      sealPassthroughFalse: e.MOCK_GATEWAY_SEALED,
      pythonTimeoutMs: e.MOCK_PYTHON_TIMEOUT_MS,
      pythonMemoryMb: e.MOCK_PYTHON_MEMORY_MB,
      pythonImage: e.MOCK_PYTHON_IMAGE,
    },
    metrics: { port: e.METRICS_PORT, host: e.METRICS_HOST, temporalPort: e.TEMPORAL_METRICS_PORT ?? 0 },
    tracing: parseTracing(e.ORCHESTRATOR_OTLP_ENDPOINT, e.ORCHESTRATOR_OTLP_HEADERS),
    resultEvents: {
      enabled: e.RESULT_EVENTS_ENABLED,
      exchange: e.RESULT_EVENTS_EXCHANGE,
      retentionDays: e.RESULT_EVENTS_RETENTION_DAYS,
    },
    api: parseApi(e),
    secretsKey: parseSecretsKey(e.AGENTBENCH_SECRETS_KEY),
    logLevel: e.LOG_LEVEL,
  };
}

/**
 * `/metrics` ports when METRICS_PORT is unset: different per command, so a worker and a bridge on
 * one host (docker-compose, a dev machine) do not collide. 9464 is the usual Prometheus exporter port.
 */
export const DEFAULT_METRICS_PORTS = { worker: 9464, bridge: 9465 } as const;

/** The port a command serves `/metrics` on; 0 = none. */
export function metricsPortFor(config: Config, command: keyof typeof DEFAULT_METRICS_PORTS): number {
  return config.metrics.port ?? DEFAULT_METRICS_PORTS[command];
}

/** Settings the bridge cannot run without (CONTRACT §9 marks them required). */
export function requireBridgeSettings(config: Config): {
  amqpUrl: string;
  redis: Config['redis'] & { host: string };
} {
  const { rabbitmq, redis } = config;
  for (const [name, value] of [
    ['RABBITMQ_HOST', rabbitmq.host],
    ['RABBITMQ_USER', rabbitmq.user],
    ['RABBITMQ_PASSWORD', rabbitmq.password],
    ['REDIS_HOST', redis.host],
  ] as const) {
    if (!value) throw new ConfigError(name, `Missing required env var: ${name}`);
  }
  return { amqpUrl: amqpUrl(config), redis: { ...redis, host: redis.host as string } };
}

/** CONTRACT §1.1 URL building: vhost "/" becomes %2F, everything else URL-encoded. */
export function amqpUrl(config: Config): string {
  const { host, port, user, password, vhost } = config.rabbitmq;
  if (!host || !user || password === undefined) {
    throw new ConfigError(
      'RABBITMQ_HOST',
      'Missing required env var: RABBITMQ_HOST/RABBITMQ_USER/RABBITMQ_PASSWORD',
    );
  }
  const v = vhost === '/' ? '%2F' : encodeURIComponent(vhost);
  return `amqp://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${host}:${port}/${v}`;
}

/** The database URL, or the contract's error when none is configured. */
export function requireDatabaseUrl(config: Config): string {
  if (config.database.engine !== 'postgres') {
    throw new ConfigError(
      'DATABASE_ENGINE',
      'DATABASE_ENGINE=mysql is not supported by this runner; use postgres',
    );
  }
  if (!config.database.url) {
    throw new ConfigError('POSTGRES_SERVER', 'E_DB_CONFIG_MISSING: postgres env vars are not configured');
  }
  return config.database.url;
}

/** What a case gets where its runtime spec is silent (merged in resolveCaseSpec). */
export function caseSpecDefaults(config: Config): CaseSpecDefaults {
  const { sandbox } = config;
  return {
    caseTimeoutSeconds: config.consumer.caseTimeoutSeconds,
    limits: {
      memoryMb: sandbox.defaultMemoryMb,
      cpus: sandbox.defaultCpus,
      pidsLimit: sandbox.defaultPidsLimit,
    },
    hardening: { noNewPrivileges: sandbox.noNewPrivileges, dropAllCapabilities: sandbox.dropAllCapabilities },
  };
}
