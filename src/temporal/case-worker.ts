import { randomBytes } from 'node:crypto';
import { WORKFLOWS_PATH } from './workflows-path';
import { NativeConnection, Worker } from '@temporalio/worker';
import type { Client } from '@temporalio/client';
import type pg from 'pg';
import type Dockerode from 'dockerode';
import { caseSpecDefaults, type Config } from '../config';
import type { Logger } from '../logger';
import path from 'node:path';
import { createActivities } from '../../activities';
import { FileCaseResultSpool } from '../../activities/case-result-spool';
import { LiveAttempts } from '../../activities/case-execution';
import { sweepCaseResultSpool } from '../../activities/case-result-spool-sweep';
import { rideOutOutage } from '../../activities/infra-outage';
import { RunRequestCache } from '../db/run-request-cache';
import { DEFAULT_CASE_FILES_DIR, DockerSandbox } from '../docker/docker-sandbox';
import { ImagePuller } from '../docker/image-puller';
import { Semaphore } from '../docker/semaphore';
import { OrphanReaper, type OrphanReaperParams } from '../docker/orphan-reaper';
import { LABELS } from '../docker/labels';
import { OwnerBeacon, WarmPool, warmPoolOwner, warmPoolOwnership } from '../docker/warm-pool';
import type { WorkerMetrics } from '../metrics/orchestrator-metrics';
import { activityMetricsInterceptor } from '../metrics/activity-metrics-interceptor';
import { MeteredOrphanReaper } from '../metrics/metered-orphan-reaper';
import { caseContainerOwnership, caseOwnership } from './case-container-ownership';
import { createCaseTelemetry } from '../otel/case-telemetry';
import { installTemporalLogging } from './runtime-logging';
import { RunReconciler } from './run-reconciler';
import { OtelCollector } from '../otel/otel-collector';
import { CertificateAuthority } from '../mock-gateway/certificate-authority';
import { MockGatewayManager } from '../mock-gateway/case-gateway';
import { dockerHostAddress } from '../mock-gateway/host-address';
import { createIsolatedNetwork, reapIsolatedNetworks, removeCaseNetwork } from '../docker/isolated-network';
import type { OrchestratorTracing } from '../tracing/orchestrator-tracing';
import { workerTracingOptions } from '../tracing/temporal-tracing';

/** The python handler image is small and usually local; a registry pull of it gets this long. */
const PYTHON_IMAGE_PULL_TIMEOUT_SECONDS = 300;

/** How long a starting worker waits for an unreachable Docker daemon before it gives up. */
const WORKER_START_DOCKER_WAIT_MS = 10 * 60_000;

/**
 * Where finished case records wait for their final persist (activities/case-result-spool.ts): next
 * to the case files, so on Kubernetes, where that directory is the node's, a record survives a
 * restart of the worker's pod.
 */
export function resultSpoolDir(config: Config): string {
  return path.join(
    path.dirname(config.sandbox.caseFiles.dir ?? DEFAULT_CASE_FILES_DIR),
    'agentbench-result-spool',
  );
}

interface CaseWorkerDeps {
  config: Config;
  log: Logger;
  pool: pg.Pool;
  docker: Dockerode;
  /** Used by the orphan reaper to ask whether a container's run is still open. */
  client: Client;
  /** Overrides for tests and the local runner. */
  taskQueue?: string;
  /** Prometheus metrics of this worker; opt-in, so tests and `benchctl run` open no extra port. */
  metrics?: WorkerMetrics;
  /** Orchestrator traces (src/tracing); opt-in like metrics, null/absent = no tracing interceptors. */
  tracing?: OrchestratorTracing | null;
}

export interface CaseWorker {
  worker: Worker;
  reaper: OrphanReaper;
  /** SANDBOX_WARM_POOL_SIZE > 0: this worker's warm containers. */
  warmPool: WarmPool | null;
  /** Runs until shutdown() (or the promise passed to runUntil settles). */
  run(): Promise<void>;
  runUntil<R>(p: Promise<R>): Promise<R>;
  shutdown(): Promise<void>;
  /**
   * Releases what it holds (collector port, Temporal connection, sweeps) when it never ran or an
   * error came first; run/runUntil do this themselves. Idempotent.
   */
  close(): Promise<void>;
}

/**
 * A worker process's pieces: one Docker-operation semaphore for the whole process (back-pressure on
 * the daemon), a separate live-container limit, the activities, and the orphan reaper.
 */
export async function createCaseWorker(deps: CaseWorkerDeps): Promise<CaseWorker> {
  const { config, log, pool, docker, client, metrics } = deps;
  installTemporalLogging(log);
  const ops = new Semaphore(config.docker.maxConcurrentOperations);
  // One per process: the run's preparation and every case's create path share its pulls.
  const images = new ImagePuller(docker, ops, log);
  const sandbox = new DockerSandbox(docker, ops, log, {
    images,
    caseFileDelivery: config.sandbox.caseFiles.delivery,
    caseFilesDir: config.sandbox.caseFiles.dir,
    runtime: config.sandbox.runtime,
    stopGraceMs: config.otel.flushGraceMs,
    deploymentId: config.deploymentId,
  });
  const collector = new OtelCollector({
    pool,
    log,
    host: config.otel.collectorHost,
    port: config.otel.collectorPort,
    maxBodyBytes: config.otel.maxBodyBytes,
    allowUntokened: config.otel.allowUntokenedIngest,
    anyContentType: config.otel.anyContentType,
    onIngest: metrics ? (event) => metrics.otelIngest(event) : undefined,
  });
  const { port: collectorPort } = await collector.start();
  const advertisedHost = config.mockGateway.advertisedHost;
  const ca = config.mockGateway.caDir
    ? await CertificateAuthority.loadOrCreate(config.mockGateway.caDir)
    : CertificateAuthority.generate();
  const gateways = new MockGatewayManager({
    log,
    ca,
    docker,
    // The worker's first Docker call: a daemon restarting right now is waited for, not a crash.
    bindHost:
      config.mockGateway.bindHost ??
      (await rideOutOutage(() => dockerHostAddress(docker), {
        what: "Docker's bridge address",
        log,
        budgetMs: WORKER_START_DOCKER_WAIT_MS,
      })),
    advertisedHost,
    python: {
      image: config.mockGateway.pythonImage,
      timeoutMs: config.mockGateway.pythonTimeoutMs,
      memoryMb: config.mockGateway.pythonMemoryMb,
      labels: { [LABELS.deployment]: config.deploymentId },
      ensureImage: async (image) => {
        await images.ensureImage(image, 'if-not-present', PYTHON_IMAGE_PULL_TIMEOUT_SECONDS);
      },
    },
    // OTel posts a gateway intercepts belong to the case whose container sent them.
    otelForward: async (req) => {
      const token = collector.tokenForSource(req.sourceIp);
      if (!token) {
        return {
          status: 403,
          headers: { 'content-type': 'application/json' },
          body: Buffer.from('{"ok":false,"error":"unknown source"}'),
        };
      }
      const r = await collector.ingestForCase(token, {
        path: req.path,
        headers: req.headers,
        body: req.body,
      });
      return { status: r.status, headers: r.headers, body: Buffer.from(r.body) };
    },
  });
  const liveContainers = new Semaphore(config.docker.maxLiveContainers);
  const poolOwner = warmPoolOwner();
  const warmPool =
    config.sandbox.warmPool.size > 0
      ? new WarmPool({
          sandbox,
          liveContainers,
          maxLiveContainers: config.docker.maxLiveContainers,
          size: config.sandbox.warmPool.size,
          idleMs: config.sandbox.warmPool.idleSeconds * 1000,
          owner: poolOwner,
          createNetwork: ({ name, sealed, ports, labels }) =>
            createIsolatedNetwork(docker, { name, labels, deploymentId: config.deploymentId, sealed, ports }),
          log,
        })
      : null;
  // How workers in other pid namespaces on this host (pods of one node) tell this one lives.
  const beacon = warmPool ? new OwnerBeacon(sandbox.caseFiles.root, poolOwner) : null;
  await beacon?.start();
  const stopObserving = metrics?.observeWorker({
    dockerOperations: ops,
    dockerOperationsLimit: config.docker.maxConcurrentOperations,
    liveContainers,
    liveContainersLimit: config.docker.maxLiveContainers,
  });
  // One directory per deployment under resultSpoolDir (FileCaseResultSpool).
  const spool = new FileCaseResultSpool(resultSpoolDir(config), config.deploymentId);
  // The one place where the activities meet the concrete adapters.
  // The container phases running here: a retry joins one, the spool sweep leaves its entry alone.
  const liveAttempts = new LiveAttempts();
  const activities = createActivities({
    liveAttempts,
    log,
    pool,
    resultEvents: config.resultEvents.enabled,
    runRequests: new RunRequestCache(pool, caseSpecDefaults(config), config.secretsKey),
    images,
    pullAttempts: config.consumer.maxRetries,
    sandbox,
    liveContainers,
    ...(warmPool ? { warmPool } : {}),
    spool,
    caseWanted: caseOwnership({ pool, client }),
    ...(config.worker.faultPauseAfterCaseExecMs > 0
      ? { pauseAfterCaseExecMs: config.worker.faultPauseAfterCaseExecMs }
      : {}),
    telemetry: createCaseTelemetry({ pool, log, flushGraceMs: config.otel.flushGraceMs }),
    collector,
    collectorUrl: `http://${advertisedHost}:${collectorPort}`,
    gateways,
    networks: {
      isolate: config.sandbox.isolateCases,
      collectorPort,
      hostPorts: config.sandbox.hostPorts,
      create: ({ runCaseId, experimentId, sealed, ports }) =>
        createIsolatedNetwork(docker, {
          name: `agentbench-case-${runCaseId}-${randomBytes(4).toString('hex')}`,
          labels: { [LABELS.runCaseId]: String(runCaseId), [LABELS.experimentId]: String(experimentId) },
          deploymentId: config.deploymentId,
          sealed,
          ports,
        }),
      removeLeftover: (name) => removeCaseNetwork(docker, { name, deploymentId: config.deploymentId }),
    },
    sealPassthroughFalse: config.mockGateway.sealPassthroughFalse,
    flushGraceMs: config.otel.flushGraceMs,
    evaluator: config.evaluator,
    llm: config.llm,
    config: { resultCache: config.resultCache },
    specDefaults: caseSpecDefaults(config),
  });

  const reaperParams: OrphanReaperParams = {
    sandbox,
    log,
    deploymentId: config.deploymentId,
    minAgeSeconds: config.sandbox.reaperMinAgeSeconds,
    // A container of a killed worker's attempt is removed by the retried attempt itself (heartbeat details).
    // Warm containers carry no case labels: judged by their pool's owner (warm-pool.ts).
    judge: warmPoolOwnership(caseContainerOwnership({ pool, client }), {
      ...(warmPool ? { self: { owner: poolOwner, pool: warmPool, sandbox } } : {}),
      beaconDir: sandbox.caseFiles.root,
    }),
  };
  const reaper = metrics ? new MeteredOrphanReaper(reaperParams, metrics) : new OrphanReaper(reaperParams);

  // Runs closed from outside their workflow (terminate, a failed workflow) leave active rows: closed here.
  const reconciler = new RunReconciler({
    pool,
    client,
    log,
    minIdleSeconds: config.sandbox.reconcilerMinIdleSeconds,
    resultEvents: config.resultEvents.enabled,
  });

  const tracing = await workerTracingOptions(deps.tracing ?? null, {
    workflowBundlePath: config.worker.workflowBundlePath,
    log,
  });
  const connection = await NativeConnection.connect({ address: config.temporal.address });
  const worker = await Worker.create({
    connection,
    namespace: config.temporal.namespace,
    taskQueue: deps.taskQueue ?? config.temporal.taskQueue,
    // A prebuilt bundle (scripts/bundle-workflows.ts) skips webpack at start-up.
    ...(config.worker.workflowBundlePath
      ? { workflowBundle: { codePath: config.worker.workflowBundlePath } }
      : { workflowsPath: WORKFLOWS_PATH }),
    activities,
    maxConcurrentActivityTaskExecutions: config.worker.maxConcurrentActivities,
    // After shutdown() in-flight activities get this long to finish; then they are canceled: the
    // container phase removes its container and fails the attempt, which another worker retries.
    shutdownGraceTime: config.worker.shutdownGraceSeconds * 1000,
    // Cancellations reach an activity only in heartbeat responses. The SDK would send at most one
    // heartbeat per 0.8 × heartbeatTimeout (24 s): a canceled case could keep its container that long.
    // With this cap every container-phase heartbeat (HEARTBEAT_INTERVAL_MS) goes out.
    maxHeartbeatThrottleInterval: '1s',
    // Tracing first: its RunActivity span then also covers the metrics interceptor's time.
    interceptors: {
      activity: [
        ...tracing.activity,
        ...(metrics ? [activityMetricsInterceptor(metrics, Object.keys(activities))] : []),
      ],
      workflowModules: tracing.workflowModules,
    },
    ...(tracing.sinks ? { sinks: tracing.sinks } : {}),
  });

  // Spooled records of attempts nobody came back for (their retry ran on another host): stored, then removed.
  const sweepSpool = () =>
    sweepCaseResultSpool({
      spool,
      pool,
      log,
      minAgeMs: config.sandbox.reaperMinAgeSeconds * 1000,
      liveAttempts,
    }).catch((err: unknown) => log.warn({ code: 'E_CASE_SPOOL_SWEEP_FAILED', err }, 'spool sweep failed'));
  let spoolSweeps: NodeJS.Timeout | undefined;

  const startReaper = async () => {
    await sweepSpool();
    spoolSweeps = setInterval(() => void sweepSpool(), config.sandbox.reaperIntervalSeconds * 1000);
    spoolSweeps.unref();
    const swept = await reaper.sweep().catch((err: unknown) => {
      log.warn({ code: 'E_SANDBOX_REAPER_FAILED', err }, 'orphan sweep failed');
      return null;
    });
    if (swept && swept.removed.length > 0)
      log.info({ code: 'SANDBOX_ORPHANS_REMOVED', removed: swept.removed.length }, 'orphans removed');
    reaper.start(config.sandbox.reaperIntervalSeconds);
    reconciler.start(config.sandbox.reconcilerIntervalSeconds);
    // Case networks of a crashed worker's cases (Docker's address pool is small).
    await reapIsolatedNetworks(docker, {
      deploymentId: config.deploymentId,
      minAgeMs: config.sandbox.reaperMinAgeSeconds * 1000,
    }).catch((err: unknown) =>
      log.warn({ code: 'E_SANDBOX_REAPER_FAILED', err }, 'case network sweep failed'),
    );
  };

  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    clearInterval(spoolSweeps);
    await reaper.stop();
    await warmPool?.close();
    await beacon?.stop();
    await reconciler.stop();
    await collector.stop();
    stopObserving?.();
    // A worker that never ran still holds its reference on the connection, and the SDK refuses to
    // close it then; the process's exit releases both.
    if (worker.getState() !== 'INITIALIZED') await connection.close();
  };

  return {
    worker,
    reaper,
    warmPool,
    async run() {
      await startReaper();
      try {
        await worker.run();
      } finally {
        await close();
      }
    },
    async runUntil<R>(p: Promise<R>) {
      await startReaper();
      try {
        return await worker.runUntil(p);
      } finally {
        await close();
      }
    },
    async shutdown() {
      if (worker.getState() === 'RUNNING') worker.shutdown();
    },
    close,
  };
}
