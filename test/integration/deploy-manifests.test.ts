import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { CONFIG_VARIABLES, DEFAULT_METRICS_PORTS, loadConfig, requireDatabaseUrl } from '../../src/config';
import { resultSpoolDir } from '../../src/temporal/case-worker';

const run = promisify(execFile);
const REPO = path.resolve(__dirname, '../..');
const K8S = path.join(REPO, 'deploy/k8s');
const VERSION = (JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string })
  .version;
const OUR_IMAGE = `agentbench-orchestrator:${VERSION}`;
/** The oldest Kubernetes we support and the newest the validator ships schemas for. */
const KUBERNETES_VERSIONS = ['1.29.0', '1.37.0'];
const defaults = loadConfig({ AGENTBENCH_STATE_DIR: process.env.AGENTBENCH_STATE_DIR ?? '' });
/** scripts/setup's venv of deploy/validate-requirements.txt, in its state dir. */
const VALIDATORS = path.join(defaults.stateDir, 'venvs/deploy-validate/bin');

/** Host ports of what scripts/setup starts (and of a worker/bridge run on the host with defaults). */
const SETUP_PORTS = new Set([
  5432, // PostgreSQL
  6379, // Redis
  5672,
  15672,
  25672,
  4369, // RabbitMQ: AMQP, management, distribution, epmd
  Number(defaults.temporal.address.split(':').pop()),
  Number(defaults.temporal.address.split(':').pop()) + 1000, // the dev server's Web UI
  DEFAULT_METRICS_PORTS.worker,
  DEFAULT_METRICS_PORTS.bridge,
  defaults.otel.collectorPort,
]);

/* eslint-disable @typescript-eslint/no-explicit-any -- parsed manifests are walked as plain JSON */
type Doc = Record<string, any>;

/** YAML → JSON with the validators' PyYAML (no YAML parser among our npm dependencies). */
async function parseYaml(text: string): Promise<Doc[]> {
  const pending = run(path.join(VALIDATORS, 'python'), [
    '-c',
    'import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d is not None]))',
  ]);
  pending.child.stdin?.end(text);
  return JSON.parse((await pending).stdout) as Doc[];
}

function k8sFiles(): string[] {
  return readdirSync(K8S)
    .filter((f) => /\.ya?ml$/.test(f))
    .map((f) => path.join(K8S, f));
}

let parsedK8s: Promise<Doc[]> | undefined;
function k8sDocs(): Promise<Doc[]> {
  parsedK8s ??= Promise.all(k8sFiles().map((f) => parseYaml(readFileSync(f, 'utf8')))).then((all) =>
    all.flat(),
  );
  return parsedK8s;
}

function podSpec(doc: Doc): Doc | undefined {
  if (doc.kind === 'Pod') return doc.spec;
  if (doc.kind === 'CronJob') return doc.spec?.jobTemplate?.spec?.template?.spec;
  return doc.spec?.template?.spec;
}

function containersOf(doc: Doc): Doc[] {
  const spec = podSpec(doc);
  return [...(spec?.initContainers ?? []), ...(spec?.containers ?? [])];
}

function find(docs: Doc[], kind: string, name: string): Doc {
  const doc = docs.find((d) => d.kind === kind && d.metadata?.name === name);
  assert.ok(doc, `${kind}/${name} not found`);
  return doc;
}

function envValue(container: Doc, name: string): string | undefined {
  return (container.env as Array<{ name: string; value?: string }> | undefined)?.find((e) => e.name === name)
    ?.value;
}

function assertProbes(container: Doc, port: number) {
  const portName = (container.ports as Array<{ name: string; containerPort: number }>).find(
    (p) => p.containerPort === port,
  )?.name;
  assert.ok(portName, `${container.name} exposes ${port}`);
  assert.deepEqual(
    container.readinessProbe?.httpGet,
    { path: '/readyz', port: portName },
    `${container.name} readiness`,
  );
  assert.deepEqual(
    container.livenessProbe?.httpGet,
    { path: '/healthz', port: portName },
    `${container.name} liveness`,
  );
  // Each dependency check of /readyz is cut at 3 s (src/cli/commands/{worker,bridge}.ts).
  assert.ok(container.readinessProbe.timeoutSeconds > 3, `${container.name} readiness timeout`);
}

describe('deploy/: Kubernetes manifests and docker-compose.yml, validated offline', () => {
  test('every file under deploy/k8s validates strictly against the bundled schemas of Kubernetes 1.29 and 1.37', async () => {
    const files = k8sFiles();
    assert.ok(files.length >= 1);
    const results = await Promise.all(
      KUBERNETES_VERSIONS.map((version) =>
        run(path.join(VALIDATORS, 'kubernetes-validate'), [
          '--strict',
          '--quiet',
          '-k',
          version,
          ...files,
        ]).then(
          ({ stdout, stderr }) => ({ version, code: 0, output: stdout + stderr }),
          (err: { code: number; stdout: string; stderr: string }) => ({
            version,
            code: err.code,
            output: err.stdout + err.stderr,
          }),
        ),
      ),
    );
    // --quiet prints only failures and warnings (a kind without a schema is a warning): none allowed.
    assert.deepEqual(
      results,
      KUBERNETES_VERSIONS.map((version) => ({ version, code: 0, output: '' })),
    );
  });

  test('images are pinned (a tag, never latest); ours is the package.json version, also in the Job name', async () => {
    const docs = await k8sDocs();
    const images = docs.flatMap((d) => containersOf(d).map((c) => String(c.image)));
    assert.ok(images.length > 0);
    for (const image of images) {
      assert.match(image, /^[^@]+:[^:/@]+$|@sha256:[0-9a-f]{64}$/, `${image} has a tag or digest`);
      assert.doesNotMatch(image, /:latest$/, image);
    }
    const ours = images.filter((i) => /(^|\/)agentbench-orchestrator[:@]/.test(i));
    assert.ok(ours.length >= 3 && ours.every((i) => i.endsWith(OUR_IMAGE)), ours.join(', '));
    find(docs, 'Job', `agentbench-search-attributes-${VERSION.replaceAll('.', '-')}`);
  });

  test('every container requests cpu and memory and has a memory limit', async () => {
    for (const doc of await k8sDocs()) {
      for (const c of containersOf(doc)) {
        const what = `${doc.kind}/${doc.metadata.name} ${c.name}`;
        assert.ok(c.resources?.requests?.cpu && c.resources?.requests?.memory, `${what} requests`);
        assert.ok(c.resources?.limits?.memory, `${what} memory limit`);
      }
    }
  });

  test('worker: probes on its metrics port, NET_ADMIN and nothing more, a grace period longer than its drain', async () => {
    const docs = await k8sDocs();
    const ds = find(docs, 'DaemonSet', 'agentbench-worker');
    const spec = podSpec(ds);
    const [worker] = containersOf(ds);
    assert.ok(spec && worker);
    assert.deepEqual(worker.args, ['worker']);
    assertProbes(worker, DEFAULT_METRICS_PORTS.worker);
    assert.deepEqual(worker.securityContext.capabilities, { drop: ['ALL'], add: ['NET_ADMIN'] });
    assert.equal(worker.securityContext.allowPrivilegeEscalation, false);
    assert.equal(worker.securityContext.readOnlyRootFilesystem, true);
    assert.notEqual(worker.securityContext.privileged, true);
    assert.equal(spec.hostNetwork, true);
    assert.equal(spec.dnsPolicy, 'ClusterFirstWithHostNet', 'cluster DNS names resolve on the host network');
    const grace = Number(envValue(worker, 'WORKER_SHUTDOWN_GRACE_SECONDS'));
    assert.ok(grace > 0, 'in-flight cases get time to finish');
    assert.ok(
      spec.terminationGracePeriodSeconds >= grace + 10,
      'the drain, then cancel and trace flush, fit in the grace period',
    );
    const caseFiles = envValue(worker, 'SANDBOX_CASE_FILES_DIR');
    const mount = (worker.volumeMounts as Doc[]).find((m) => m.mountPath === caseFiles);
    const volume = (spec.volumes as Doc[]).find((v) => v.name === mount?.name);
    assert.equal(volume?.hostPath?.path, caseFiles, 'case files: the same path in the pod and on the node');
    assert.ok((worker.volumeMounts as Doc[]).some((m) => m.mountPath === '/var/run/docker.sock'));
    assert.ok(
      (worker.volumeMounts as Doc[]).some((m) => m.mountPath === '/tmp'),
      'a writable /tmp on a read-only root',
    );
  });

  /**
   * Config variables the worker manifest leaves unset, and why their default is right on a node.
   * A new variable fails the test below until it is set in deploy/k8s/agentbench.yaml or listed here.
   */
  const WORKER_DEFAULT_FITS: Record<string, string> = {
    RABBITMQ_PORT: 'the broker’s standard port',
    RABBITMQ_VHOST: 'the platform publishes to /',
    CONSUMER_SCORER_CONCURRENT_CASES: 'CONTRACT §9 default',
    CONSUMER_MAX_RETRIES: 'CONTRACT §9 default',
    CONSUMER_CASE_TIMEOUT_SECONDS: 'CONTRACT §9 default; WORKER_SHUTDOWN_GRACE_SECONDS is sized on it',
    CONSUMER_DOCKER_NETWORK: 'accepted for compatibility, never read',
    CONSUMER_AGENT_EXEC_COMMAND: 'accepted for compatibility, never read',
    CONSUMER_DOCKER_PULL_POLICY: 'accepted for compatibility, never read',
    CONSUMER_DOCKER_PULL_TIMEOUT_SECONDS: 'accepted for compatibility, never read',
    CONSUMER_DOCKER_RUN_TIMEOUT_SECONDS: 'accepted for compatibility, never read',
    CONSUMER_DOCKER_INSPECT_TIMEOUT_SECONDS: 'accepted for compatibility, never read',
    REDIS_HOST: 'bridge only: the worker never talks to Redis',
    REDIS_PORT: 'bridge only',
    REDIS_USERNAME: 'bridge only',
    REDIS_PASSWORD: 'bridge only',
    REDIS_DB: 'bridge only',
    CONSUMER_REDIS_PROCESSED_TTL_SECONDS: 'bridge only',
    DATABASE_ENGINE: 'postgres, the only engine',
    DATEBASE_ENGINE: 'the original’s misspelling, accepted for compatibility',
    POSTGRES_PORT: 'the standard port',
    DATABASE_URL: 'built from POSTGRES_* instead',
    CONSUMER_EVALUATOR_TIMEOUT_SECONDS: 'accepted for compatibility, never read',
    CONSUMER_EVALUATOR_CONNECT_TIMEOUT_SECONDS: 'CONTRACT §9 default',
    CONSUMER_EVALUATOR_READ_TIMEOUT_SECONDS: 'CONTRACT §9 default',
    CONSUMER_EVALUATOR_MAX_RETRIES: 'CONTRACT §9 default',
    CONSUMER_EVALUATOR_RETRY_BACKOFF_SECONDS: 'CONTRACT §9 default',
    CONSUMER_SCORER_HARD_TIMEOUT_SECONDS: 'CONTRACT §9 default',
    DATABASE_POOL_MAX: 'sized for WORKER_MAX_CONCURRENT_ACTIVITIES',
    TEMPORAL_UI_URL: 'links printed by the CLI, not the worker',
    AGENTBENCH_STATE_DIR: 'local services of scripts/setup and benchctl run only',
    BRIDGE_PREFETCH: 'bridge only',
    BRIDGE_START_MAX_ATTEMPTS: 'bridge only',
    WORKER_MAX_CONCURRENT_ACTIVITIES: 'bounded by DOCKER_MAX_LIVE_CONTAINERS anyway',
    AGENTBENCH_FAULT_PAUSE_AFTER_CASE_EXEC_MS: 'tests only: 0 (no pause) is the only production value',
    DOCKER_SOCKET_PATH: 'where the node’s socket is mounted',
    DOCKER_MAX_CONCURRENT_OPERATIONS: 'per node, fits a node',
    DOCKER_MAX_LIVE_CONTAINERS: 'per node, fits the worker’s requests',
    SANDBOX_DEFAULT_MEMORY_MB: 'per-agent runtime_spec overrides it',
    SANDBOX_DEFAULT_CPUS: 'per-agent runtime_spec overrides it',
    SANDBOX_DEFAULT_PIDS_LIMIT: 'per-agent runtime_spec overrides it',
    SANDBOX_NO_NEW_PRIVILEGES: 'hardened by default',
    SANDBOX_DROP_ALL_CAPABILITIES: 'hardened by default',
    SANDBOX_ISOLATE_CASES: 'a network per case by default',
    SANDBOX_HOST_PORTS: 'no host port is reachable unless an operator opens one',
    SANDBOX_REAPER_INTERVAL_SECONDS: 'default sweep',
    SANDBOX_REAPER_MIN_AGE_SECONDS: 'default age',
    SANDBOX_WARM_POOL_SIZE: 'off by default (0): an operator enables warm sandboxes per deployment',
    SANDBOX_WARM_POOL_IDLE_SECONDS: 'only read with a warm pool',
    RUN_RECONCILER_INTERVAL_SECONDS: 'default sweep',
    RUN_RECONCILER_MIN_IDLE_SECONDS: 'default idle time',
    SANDBOX_CASE_FILES: 'auto: bind mounts, since SANDBOX_CASE_FILES_DIR is the node’s path',
    SANDBOX_RUNTIME: 'the node daemon’s default runtime',
    OTEL_COLLECTOR_PORT: '14318 as the original; hostNetwork puts it on the node',
    OTEL_FLUSH_GRACE_MS: 'default grace',
    OTEL_COLLECTOR_HOST: 'cases reach it through the host gateway; ingest needs a per-case token',
    OTEL_MAX_BODY_BYTES: 'default limit',
    OTEL_ALLOW_UNTOKENED_INGEST: 'off: every span carries its case’s token',
    OTEL_INGEST_ANY_CONTENT_TYPE: 'off unless old agents need it',
    MOCK_GATEWAY_BIND_HOST: 'the docker0 address, found at start',
    MOCK_GATEWAY_ADVERTISED_HOST: 'host.docker.internal, mapped to the host gateway in every case',
    MOCK_GATEWAY_CA_DIR: 'a fresh CA per worker process',
    MOCK_GATEWAY_SEALED: 'sealed by default',
    MOCK_PYTHON_TIMEOUT_MS: 'default deadline',
    MOCK_PYTHON_MEMORY_MB: 'default limit',
    LLM_BASE_URL: 'only for the built-in runtimes, opt-in',
    LLM_MODEL: 'only for the built-in runtimes, opt-in',
    LLM_API_KEY: 'only for the built-in runtimes, opt-in (a Secret key then)',
    RESULT_CACHE_TTL_SECONDS: 'default TTL',
    METRICS_PORT: 'the worker default, 9464, is what the probes and annotations name',
    METRICS_HOST: 'all interfaces, for the scrape',
    TEMPORAL_METRICS_PORT: 'off (see the annotation comment)',
    ORCHESTRATOR_OTLP_ENDPOINT: 'tracing of the orchestrator is opt-in',
    ORCHESTRATOR_OTLP_HEADERS: 'tracing of the orchestrator is opt-in',
    RESULT_EVENTS_ENABLED: 'on',
    RESULT_EVENTS_EXCHANGE: 'the documented exchange',
    RESULT_EVENTS_RETENTION_DAYS: 'default retention',
    API_HOST: 'benchctl api only',
    API_PORT: 'benchctl api only',
    API_TOKENS: 'benchctl api only',
    API_READ_TOKENS: 'benchctl api only',
    API_ALLOW_ANONYMOUS: 'benchctl api only',
    API_MAX_BODY_BYTES: 'benchctl api only',
    API_MAX_EVENT_STREAMS: 'benchctl api only',
    LOG_LEVEL: 'info',
  };
  /** Defaults that fit a developer's machine only: the worker manifest must set these. */
  const WORKER_MUST_SET = [
    'TEMPORAL_ADDRESS',
    'TEMPORAL_NAMESPACE',
    'TEMPORAL_TASK_QUEUE',
    'AGENTBENCH_DEPLOYMENT_ID',
    'POSTGRES_SERVER',
    'POSTGRES_USER',
    'POSTGRES_PASSWORD',
    'POSTGRES_DB',
    'RABBITMQ_HOST',
    'RABBITMQ_USER',
    'RABBITMQ_PASSWORD',
    'AGENTBENCH_SECRETS_KEY',
    'MOCK_PYTHON_IMAGE',
    'SANDBOX_CASE_FILES_DIR',
    'WORKER_SHUTDOWN_GRACE_SECONDS',
    'WORKFLOW_BUNDLE_PATH',
  ];

  test('worker: every config variable is set (manifest, ConfigMap, Secret or image) or its default is said to fit; the result is a valid config', async () => {
    const docs = await k8sDocs();
    const [worker] = containersOf(find(docs, 'DaemonSet', 'agentbench-worker'));
    assert.ok(worker);
    const env: Record<string, string> = {};
    // The image's ENV (deploy/Dockerfile, last stage), then the pod's envFrom, then its env.
    for (const line of readFileSync(path.join(REPO, 'deploy/Dockerfile'), 'utf8').match(/^ENV .+$/gm) ?? [])
      for (const pair of line.slice(4).trim().split(/\s+/)) {
        const [name, value = ''] = pair.split('=');
        if (name) env[name] = value;
      }
    // The Secret is created by hand: its keys are those the header's `kubectl create secret` names.
    const secretKeys = [
      ...readFileSync(path.join(K8S, 'agentbench.yaml'), 'utf8').matchAll(/--from-literal=([A-Z_]+)=/g),
    ].map((m) => m[1] as string);
    for (const from of worker.envFrom as Doc[]) {
      if (from.configMapRef) Object.assign(env, find(docs, 'ConfigMap', from.configMapRef.name).data);
      if (from.secretRef?.name === 'agentbench-secrets')
        for (const key of secretKeys)
          env[key] = key === 'AGENTBENCH_SECRETS_KEY' ? 'A'.repeat(43) + '=' : 'x';
    }
    for (const e of worker.env as Array<{ name: string; value: string }>) env[e.name] = e.value;

    const unexplained = CONFIG_VARIABLES.filter((v) => !(v in env) && !(v in WORKER_DEFAULT_FITS));
    assert.deepEqual(
      unexplained,
      [],
      'set these in the worker manifest, or say in WORKER_DEFAULT_FITS why the default fits',
    );
    for (const v of Object.keys(WORKER_DEFAULT_FITS))
      assert.ok(CONFIG_VARIABLES.includes(v), `${v} is no config variable`);
    for (const v of WORKER_MUST_SET) assert.ok(v in env, `${v} is set for the worker`);

    const config = loadConfig(env);
    assert.match(requireDatabaseUrl(config), /^postgres:\/\/x:x@postgres\.platform\.svc:5432\//);
    assert.ok(config.secretsKey, 'AGENTBENCH_SECRETS_KEY parses');
    assert.match(config.mockGateway.pythonImage, /^[^@]+:[^:/@]+$/, 'MOCK_PYTHON_IMAGE has a tag');
    assert.doesNotMatch(config.mockGateway.pythonImage, /^bench\/|:latest$/, 'a registry image, pinned');
    // The result spool must be writable on the read-only root, and the node's.
    const spool = resultSpoolDir(config);
    const mount = (worker.volumeMounts as Doc[]).find((m) => m.mountPath === spool);
    assert.ok(mount, `the result spool ${spool} is mounted`);
    const volume = (podSpec(find(docs, 'DaemonSet', 'agentbench-worker'))?.volumes as Doc[]).find(
      (v) => v.name === mount.name,
    );
    assert.equal(volume?.hostPath?.path, spool, 'the spool is the node’s directory');
  });

  test('bridge and the search-attribute Job: non-root, no capabilities; the Job registers the search attributes', async () => {
    const docs = await k8sDocs();
    const bridge = find(docs, 'Deployment', 'agentbench-bridge');
    const job = find(docs, 'Job', `agentbench-search-attributes-${VERSION.replaceAll('.', '-')}`);
    assertProbes(containersOf(bridge)[0] as Doc, DEFAULT_METRICS_PORTS.bridge);
    assert.deepEqual((containersOf(job)[0] as Doc).args.slice(0, 1), ['register-search-attributes']);
    for (const doc of [bridge, job]) {
      assert.equal(podSpec(doc)?.securityContext?.runAsNonRoot, true, doc.kind);
      for (const c of containersOf(doc)) {
        assert.deepEqual(c.securityContext.capabilities, { drop: ['ALL'] }, `${doc.kind} ${c.name}`);
        assert.equal(c.securityContext.allowPrivilegeEscalation, false);
        assert.equal(c.securityContext.readOnlyRootFilesystem, true);
      }
    }
  });

  test('api: probes on its port, non-root without capabilities, a Service and a PodDisruptionBudget select its pods', async () => {
    const docs = await k8sDocs();
    const api = find(docs, 'Deployment', 'agentbench-api');
    const [container] = containersOf(api);
    assert.ok(container);
    assert.deepEqual(container.args, ['api']);
    assertProbes(container, 8080);
    assert.equal(podSpec(api)?.securityContext?.runAsNonRoot, true);
    assert.deepEqual(container.securityContext.capabilities, { drop: ['ALL'] });
    assert.equal(container.securityContext.readOnlyRootFilesystem, true);
    assert.equal(envValue(container, 'API_HOST'), '0.0.0.0', 'reachable through its Service');
    const labels = api.spec.template.metadata.labels as Record<string, string>;
    const selects = (d: Doc) =>
      Object.entries((d.spec.selector.matchLabels ?? d.spec.selector) as Record<string, string>).every(
        ([k, v]) => labels[k] === v,
      );
    const service = find(docs, 'Service', 'agentbench-api');
    assert.ok(selects(service), 'the Service selects the API pods');
    assert.equal(service.spec.ports[0].targetPort, 'http');
    assert.ok(
      docs.some((d) => d.kind === 'PodDisruptionBudget' && selects(d)),
      'a PodDisruptionBudget',
    );
  });

  test('a PodDisruptionBudget covers the bridge’s and the worker’s pods', async () => {
    const docs = await k8sDocs();
    for (const [kind, name] of [
      ['Deployment', 'agentbench-bridge'],
      ['DaemonSet', 'agentbench-worker'],
    ] as const) {
      const labels = find(docs, kind, name).spec.template.metadata.labels as Record<string, string>;
      const pdb = docs.find(
        (d) =>
          d.kind === 'PodDisruptionBudget' &&
          Object.entries(d.spec.selector.matchLabels as Record<string, string>).every(
            ([k, v]) => labels[k] === v,
          ),
      );
      assert.ok(pdb, `no PodDisruptionBudget selects ${kind}/${name}`);
    }
  });

  test('the registry and the local builds of an image stay in step (their last stages match)', () => {
    const read = (file: string) => readFileSync(path.join(REPO, file), 'utf8');
    // One entry per instruction (continuations joined), comments and blank lines dropped.
    const instructions = (text: string) =>
      text
        .replace(/\\\n/g, ' ')
        .split('\n')
        .map((l) => l.trim().replace(/\s+/g, ' '))
        .filter((l) => l && !l.startsWith('#'));
    const lastStage = (file: string) => {
      const all = instructions(read(file));
      const from = all.map((l) => /^FROM /i.test(l)).lastIndexOf(true);
      return all.slice(from + 1);
    };
    const runtimeOnly = (lines: string[]) =>
      lines.filter((l) => /^(WORKDIR|ENV|ENTRYPOINT|CMD|USER) /.test(l));
    assert.deepEqual(
      runtimeOnly(lastStage('deploy/Dockerfile')),
      runtimeOnly(lastStage('deploy/Dockerfile.local')),
    );
    const without = (lines: string[], pattern: RegExp) => lines.filter((l) => !pattern.test(l));
    assert.deepEqual(
      without(lastStage('deploy/agent-images/otel-sdk-agent.Dockerfile'), /site-packages\/ /),
      without(lastStage('scripts/images/otel-sdk-agent/Dockerfile'), /site-packages\/ /),
    );
    assert.deepEqual(
      without(lastStage('deploy/agent-images/runtime-web.Dockerfile'), /playwright-core\/ /),
      without(lastStage('scripts/runtimes/web.Dockerfile'), /playwright-core\/ /),
    );
    const playwright = /PLAYWRIGHT_CORE_VERSION=(\S+)/.exec(read('scripts/build-images'))?.[1];
    assert.ok(playwright);
    assert.ok(
      read('deploy/agent-images/runtime-web.Dockerfile').includes(`playwright-core@${playwright}`),
      `playwright-core ${playwright}`,
    );
    const node = /^NODE_VERSION=(\S+)$/m.exec(read('scripts/build-images'))?.[1];
    assert.ok(
      read('deploy/Dockerfile').includes(`ARG NODE_IMAGE=node:${node}-bookworm-slim`),
      `Node.js ${node} in both builds`,
    );
  });

  describe('docker-compose.yml', () => {
    const configs = new Map<string, Promise<Doc>>();
    /** `docker-compose [args] config`, parsed; once per argument list (each call costs a second or two). */
    function composeConfig(args: string[] = []): Promise<Doc> {
      const key = args.join(' ');
      let config = configs.get(key);
      if (!config) {
        config = run('docker-compose', ['-f', path.join(REPO, 'docker-compose.yml'), ...args, 'config'], {
          cwd: REPO,
        }).then(async ({ stdout }) => {
          const [doc] = await parseYaml(stdout);
          assert.ok(doc);
          return doc;
        });
        configs.set(key, config);
      }
      return config;
    }

    function hostPorts(service: Doc): number[] {
      return ((service.ports ?? []) as Array<string | { published?: number }>).map((p) =>
        typeof p === 'string' ? Number(p.split(':').slice(-2)[0]) : Number(p.published),
      );
    }

    test('docker-compose config accepts it, with and without the monitoring profile', async () => {
      await composeConfig();
      const { services } = await composeConfig(['--profile', 'monitoring']);
      const profiled = Object.entries(services as Record<string, Doc>).filter(([, s]) => s.profiles);
      assert.deepEqual(
        profiled.map(([name, s]) => [name, s.profiles]).sort(),
        [
          ['grafana', ['monitoring']],
          ['prometheus', ['monitoring']],
        ],
        'monitoring is opt-in, everything else starts by default',
      );
    });

    test('no host port collides with scripts/setup’s services, nor one with another', async () => {
      const { services } = await composeConfig(['--profile', 'monitoring']);
      const published = Object.entries(services as Record<string, Doc>).flatMap(([name, s]) =>
        hostPorts(s).map((port) => ({ name, port })),
      );
      // The worker is in the host's network: its own listeners count too.
      const worker = services.worker as Doc;
      assert.equal(worker.network_mode, 'host');
      for (const variable of ['METRICS_PORT', 'OTEL_COLLECTOR_PORT'])
        published.push({ name: `worker ${variable}`, port: Number(worker.environment[variable]) });
      for (const { name, port } of published) {
        assert.ok(Number.isInteger(port) && port > 0, `${name}: ${port}`);
        assert.ok(!SETUP_PORTS.has(port), `${name} takes ${port}, which scripts/setup's services use`);
      }
      const ports = published.map((p) => p.port);
      assert.equal(new Set(ports).size, ports.length, `duplicate host ports: ${ports.join(', ')}`);
    });

    test('registers the search attributes before the worker and bridge start, and builds every agent image', async () => {
      const { services } = await composeConfig();
      const register = services['register-search-attributes'] as Doc;
      assert.equal(register.image, OUR_IMAGE);
      assert.equal(register.command[0], 'register-search-attributes');
      for (const name of ['worker', 'bridge', 'api'])
        assert.deepEqual(
          services[name].depends_on['register-search-attributes'],
          { condition: 'service_completed_successfully' },
          name,
        );
      const built = Object.values(services as Record<string, Doc>)
        .filter((s) => s.build)
        .map((s) => s.image as string);
      for (const image of [
        'bench/busybox:latest',
        'bench/agent-base:bookworm',
        'bench/otel-sdk-agent:latest',
        'bench/otel-manual-agent:latest',
        OUR_IMAGE,
      ])
        assert.ok(built.includes(image), `${image} is built`);
      for (const [name, s] of Object.entries(services as Record<string, Doc>)) {
        if (s.build) continue;
        assert.match(String(s.image), /:[^:/]+$/, `${name} pins a tag`);
        assert.doesNotMatch(String(s.image), /:latest$/, `${name}`);
      }
    });

    test('worker as on Kubernetes: NET_ADMIN only, read-only root, a stop grace longer than its drain', async () => {
      const { services } = await composeConfig();
      const worker = services.worker as Doc;
      assert.deepEqual(
        [worker.cap_drop, worker.cap_add, worker.privileged],
        [['ALL'], ['NET_ADMIN'], undefined],
      );
      assert.equal(worker.read_only, true);
      const grace = Number(worker.environment.WORKER_SHUTDOWN_GRACE_SECONDS);
      assert.ok(
        Number.parseInt(String(worker.stop_grace_period), 10) >= grace + 10,
        String(worker.stop_grace_period),
      );
      const spool = resultSpoolDir(loadConfig(worker.environment as Record<string, string>));
      assert.ok(
        (worker.volumes as Array<string | Doc>).some((v) =>
          typeof v === 'string'
            ? v.split(':').slice(0, 2).join(':') === `${spool}:${spool}`
            : v.source === spool && v.target === spool,
        ),
        `the result spool ${spool} is the host's, not the read-only root's`,
      );
      for (const name of ['worker', 'bridge', 'api'])
        assert.ok(
          'AGENTBENCH_SECRETS_KEY' in services[name].environment,
          `${name} gets AGENTBENCH_SECRETS_KEY`,
        );
    });

    test('Prometheus scrapes the worker and bridge where compose puts them; Grafana gets the dashboard', async () => {
      const { services } = await composeConfig(['--profile', 'monitoring']);
      const [prometheusConfig] = await parseYaml(
        readFileSync(path.join(REPO, 'deploy/monitoring/prometheus.yml'), 'utf8'),
      );
      const targets = Object.fromEntries(
        (prometheusConfig?.scrape_configs as Doc[]).map((j) => [j.job_name, j.static_configs[0].targets[0]]),
      );
      assert.deepEqual(targets, {
        'agentbench-worker': `host.docker.internal:${String(services.worker.environment.METRICS_PORT)}`,
        'agentbench-bridge': `bridge:${DEFAULT_METRICS_PORTS.bridge}`,
      });
      const mounts = (s: Doc) =>
        (s.volumes as Array<string | { source: string; target: string }>).map((v) =>
          typeof v === 'string' ? v.split(':').slice(0, 2).join(':') : `${v.source}:${v.target}`,
        );
      assert.ok(
        mounts(services.prometheus).includes(
          `${path.join(REPO, 'deploy/monitoring/prometheus.yml')}:/etc/prometheus/prometheus.yml`,
        ),
      );
      assert.ok(
        mounts(services.grafana).includes(
          `${path.join(REPO, 'deploy/monitoring/grafana/provisioning')}:/etc/grafana/provisioning`,
        ),
      );
      assert.ok(
        mounts(services.grafana).includes(
          `${path.join(REPO, 'deploy/monitoring/grafana/dashboards')}:/var/lib/grafana/dashboards`,
        ),
      );
    });
  });
});
