import { homedir } from 'node:os';
import path from 'node:path';
import { z } from 'zod';

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
    .pipe(z.enum(['always', 'if-not-present', 'never'], 'one of always, if-not-present, never'))
    .default('always'),
);

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
  AGENTBENCH_STATE_DIR: optStr(),
  BRIDGE_PREFETCH: intVar(16, 1),
  WORKER_MAX_CONCURRENT_ACTIVITIES: intVar(32, 1),
  WORKFLOW_BUNDLE_PATH: optStr(),
  DOCKER_SOCKET_PATH: strVar('/var/run/docker.sock'),
  DOCKER_MAX_CONCURRENT_OPERATIONS: intVar(8, 1),
  DOCKER_MAX_LIVE_CONTAINERS: intVar(16, 1),
  SANDBOX_DEFAULT_MEMORY_MB: intVar(2048, 16),
  SANDBOX_DEFAULT_CPUS: floatVar(1.0),
  SANDBOX_DEFAULT_PIDS_LIMIT: intVar(512, 16),
  SANDBOX_NO_NEW_PRIVILEGES: boolVar(true),
  SANDBOX_DROP_ALL_CAPABILITIES: boolVar(true),
  SANDBOX_REAPER_INTERVAL_SECONDS: intVar(60, 1),
  SANDBOX_REAPER_MIN_AGE_SECONDS: intVar(120, 0),
  SANDBOX_CASE_FILES: z.preprocess(
    blankToUndefined,
    z.string().trim().toLowerCase().pipe(z.enum(['auto', 'bind', 'copy'], 'one of auto, bind, copy')).default('auto'),
  ),
  SANDBOX_CASE_FILES_DIR: optStr(),
  OTEL_COLLECTOR_PORT: intVar(14318, 0),
  OTEL_FLUSH_GRACE_MS: intVar(1000, 0),
  OTEL_COLLECTOR_HOST: strVar('0.0.0.0'),
  OTEL_MAX_BODY_BYTES: intVar(16 * 1024 * 1024, 1024),
  OTEL_ALLOW_UNTOKENED_INGEST: boolVar(false),
  MOCK_GATEWAY_BIND_HOST: optStr(),
  MOCK_GATEWAY_ADVERTISED_HOST: strVar('host.docker.internal'),
  MOCK_GATEWAY_CA_DIR: optStr(),
  MOCK_GATEWAY_SEALED: boolVar(true),
  MOCK_PYTHON_TIMEOUT_MS: intVar(5000, 100),
  MOCK_PYTHON_MEMORY_MB: intVar(256, 32),
  MOCK_PYTHON_EXECUTABLE: strVar('python3'),
  METRICS_PORT: optPort(),
  METRICS_HOST: strVar('0.0.0.0'),
  TEMPORAL_METRICS_PORT: optPort(),
  // Checked in parseTracing, whose errors never echo the value (headers carry credentials).
  ORCHESTRATOR_OTLP_ENDPOINT: optStr(),
  ORCHESTRATOR_OTLP_HEADERS: optStr(),
  LOG_LEVEL: z.preprocess(
    blankToUndefined,
    z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  ),
});

export type PullPolicy = 'always' | 'if-not-present' | 'never';

export interface Config {
  rabbitmq: {
    host: string | undefined;
    port: number;
    user: string | undefined;
    password: string | undefined;
    vhost: string;
    queue: string;
    prefetch: number;
  };
  consumer: {
    concurrentCases: number;
    scorerConcurrentCases: number;
    maxRetries: number;
    caseTimeoutSeconds: number;
    dockerNetwork: string | undefined;
    agentExecCommand: string | undefined;
    dockerPullPolicy: PullPolicy;
    dockerPullTimeoutSeconds: number;
    dockerRunTimeoutSeconds: number;
    dockerInspectTimeoutSeconds: number;
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
    timeoutSeconds: number;
    connectTimeoutSeconds: number;
    readTimeoutSeconds: number;
    maxRetries: number;
    retryBackoffSeconds: number;
    scorerHardTimeoutSeconds: number;
  };
  temporal: { address: string; namespace: string; taskQueue: string; uiUrl: string };
  /** State and logs of the local services (scripts/setup, and the Temporal dev server `benchctl run` starts). */
  stateDir: string;
  worker: { maxConcurrentActivities: number; workflowBundlePath: string | undefined };
  docker: { socketPath: string; maxConcurrentOperations: number; maxLiveContainers: number };
  sandbox: {
    defaultMemoryMb: number;
    defaultCpus: number;
    defaultPidsLimit: number;
    noNewPrivileges: boolean;
    dropAllCapabilities: boolean;
    reaperIntervalSeconds: number;
    reaperMinAgeSeconds: number;
    /** How /benchmark/* reaches a container (see DockerSandbox); dir undefined = <tmpdir>/agentbench-case-files. */
    caseFiles: { delivery: 'auto' | 'bind' | 'copy'; dir: string | undefined };
  };
  otel: { collectorHost: string; collectorPort: number; flushGraceMs: number; maxBodyBytes: number; allowUntokenedIngest: boolean };
  mockGateway: {
    /** undefined = the docker0 address (what host.docker.internal resolves to); never 0.0.0.0 by default. */
    bindHost: string | undefined;
    advertisedHost: string;
    caDir: string | undefined;
    sealPassthroughFalse: boolean;
    pythonTimeoutMs: number;
    pythonMemoryMb: number;
    pythonExecutable: string;
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
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
}

function buildPostgresUrl(e: z.output<typeof envSchema>): string | undefined {
  if (e.DATABASE_URL) return e.DATABASE_URL;
  if (!e.POSTGRES_SERVER || !e.POSTGRES_USER || !e.POSTGRES_DB) return undefined;
  const auth = e.POSTGRES_PASSWORD
    ? `${encodeURIComponent(e.POSTGRES_USER)}:${encodeURIComponent(e.POSTGRES_PASSWORD)}`
    : encodeURIComponent(e.POSTGRES_USER);
  return `postgres://${auth}@${e.POSTGRES_SERVER}:${e.POSTGRES_PORT}/${encodeURIComponent(e.POSTGRES_DB)}`;
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
    new ConfigError('ORCHESTRATOR_OTLP_ENDPOINT', `Invalid env var ORCHESTRATOR_OTLP_ENDPOINT: expected ${why} (value not shown)`);
  let url: URL;
  try {
    url = new URL(endpointRaw.trim());
  } catch {
    throw badEndpoint('an http(s) URL such as http://otel-collector:4318');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw badEndpoint('an http(s) URL such as http://otel-collector:4318');
  // The exporter would silently drop userinfo; credentials belong in ORCHESTRATOR_OTLP_HEADERS.
  if (url.username || url.password) throw badEndpoint('a URL without user:password@ (put credentials in ORCHESTRATOR_OTLP_HEADERS)');
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
    },
    consumer: {
      concurrentCases: e.CONSUMER_CONCURRENT_CASES,
      scorerConcurrentCases: e.CONSUMER_SCORER_CONCURRENT_CASES,
      maxRetries: e.CONSUMER_MAX_RETRIES,
      caseTimeoutSeconds: e.CONSUMER_CASE_TIMEOUT_SECONDS,
      dockerNetwork: e.CONSUMER_DOCKER_NETWORK,
      agentExecCommand: e.CONSUMER_AGENT_EXEC_COMMAND,
      dockerPullPolicy: e.CONSUMER_DOCKER_PULL_POLICY,
      dockerPullTimeoutSeconds: e.CONSUMER_DOCKER_PULL_TIMEOUT_SECONDS,
      dockerRunTimeoutSeconds: e.CONSUMER_DOCKER_RUN_TIMEOUT_SECONDS,
      dockerInspectTimeoutSeconds: e.CONSUMER_DOCKER_INSPECT_TIMEOUT_SECONDS,
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
      timeoutSeconds: e.CONSUMER_EVALUATOR_TIMEOUT_SECONDS,
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
    stateDir: e.AGENTBENCH_STATE_DIR ?? path.join(homedir(), '.local', 'state', 'agentbench'),
    worker: { maxConcurrentActivities: e.WORKER_MAX_CONCURRENT_ACTIVITIES, workflowBundlePath: e.WORKFLOW_BUNDLE_PATH },
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
      reaperIntervalSeconds: e.SANDBOX_REAPER_INTERVAL_SECONDS,
      reaperMinAgeSeconds: e.SANDBOX_REAPER_MIN_AGE_SECONDS,
      caseFiles: { delivery: e.SANDBOX_CASE_FILES, dir: e.SANDBOX_CASE_FILES_DIR },
    },
    otel: {
      collectorHost: e.OTEL_COLLECTOR_HOST,
      collectorPort: e.OTEL_COLLECTOR_PORT,
      flushGraceMs: e.OTEL_FLUSH_GRACE_MS,
      maxBodyBytes: e.OTEL_MAX_BODY_BYTES,
      allowUntokenedIngest: e.OTEL_ALLOW_UNTOKENED_INGEST,
    },
    mockGateway: {
      bindHost: e.MOCK_GATEWAY_BIND_HOST,
      advertisedHost: e.MOCK_GATEWAY_ADVERTISED_HOST,
      caDir: e.MOCK_GATEWAY_CA_DIR,
      sealPassthroughFalse: e.MOCK_GATEWAY_SEALED,
      pythonTimeoutMs: e.MOCK_PYTHON_TIMEOUT_MS,
      pythonMemoryMb: e.MOCK_PYTHON_MEMORY_MB,
      pythonExecutable: e.MOCK_PYTHON_EXECUTABLE,
    },
    metrics: { port: e.METRICS_PORT, host: e.METRICS_HOST, temporalPort: e.TEMPORAL_METRICS_PORT ?? 0 },
    tracing: parseTracing(e.ORCHESTRATOR_OTLP_ENDPOINT, e.ORCHESTRATOR_OTLP_HEADERS),
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
    throw new ConfigError('RABBITMQ_HOST', 'Missing required env var: RABBITMQ_HOST/RABBITMQ_USER/RABBITMQ_PASSWORD');
  }
  const v = vhost === '/' ? '%2F' : encodeURIComponent(vhost);
  return `amqp://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${host}:${port}/${v}`;
}

/** The database URL, or the contract's error when none is configured. */
export function requireDatabaseUrl(config: Config): string {
  if (config.database.engine !== 'postgres') {
    throw new ConfigError('DATABASE_ENGINE', 'DATABASE_ENGINE=mysql is not supported by this runner; use postgres');
  }
  if (!config.database.url) {
    throw new ConfigError('POSTGRES_SERVER', 'E_DB_CONFIG_MISSING: postgres env vars are not configured');
  }
  return config.database.url;
}
