import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { DEFAULT_METRICS_PORTS, loadConfig } from '../../src/config';

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
