import { WORKFLOWS_PATH } from './workflows-path';
import { NativeConnection, Worker } from '@temporalio/worker';
import type { Client } from '@temporalio/client';
import type pg from 'pg';
import type Dockerode from 'dockerode';
import type { Config } from '../config';
import type { Logger } from '../logger';
import { createActivities, RunRequestCache } from '../../activities';
import { DockerSandbox } from '../docker/docker-sandbox';
import { ImagePuller } from '../docker/image-puller';
import { Semaphore } from '../docker/semaphore';
import { OrphanReaper, type OrphanReaperParams } from '../docker/orphan-reaper';
import type { WorkerMetrics } from '../metrics/orchestrator-metrics';
import { activityMetricsInterceptor } from '../metrics/activity-metrics-interceptor';
import { MeteredOrphanReaper } from '../metrics/metered-orphan-reaper';
import { LABELS } from '../docker/labels';
import { getCaseStatuses } from '../db/run-case-repository';
import { isTerminalStatus } from '../domain/case-status';
import { createCaseTelemetry } from '../otel/case-telemetry';
import { installTemporalLogging } from './runtime-logging';
import { OtelCollector } from '../otel/otel-collector';
import { CertificateAuthority } from '../mock-gateway/certificate-authority';
import { MockGatewayManager } from '../mock-gateway/case-gateway';
import { dockerHostAddress } from '../mock-gateway/host-address';
import { reapSealedNetworks } from '../mock-gateway/sealed-network';
import type { OrchestratorTracing } from '../tracing/orchestrator-tracing';
import { workerTracingOptions } from '../tracing/temporal-tracing';

export { WORKFLOWS_PATH } from './workflows-path';

export interface CaseWorkerDeps {
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
  /** Runs until shutdown() (or the promise passed to runUntil settles). */
  run(): Promise<void>;
  runUntil<R>(p: Promise<R>): Promise<R>;
  shutdown(): Promise<void>;
}

/**
 * A worker process's pieces: one Docker-operation semaphore for the whole process (back-pressure on
 * the daemon), a separate live-container limit, the activities, and the orphan reaper.
 */
export async function createCaseWorker(deps: CaseWorkerDeps): Promise<CaseWorker> {
  const { config, log, pool, docker, client, metrics } = deps;
  installTemporalLogging(log);
  const ops = new Semaphore(config.docker.maxConcurrentOperations);
  const sandbox = new DockerSandbox(docker, ops, log, {
    caseFileDelivery: config.sandbox.caseFiles.delivery,
    caseFilesDir: config.sandbox.caseFiles.dir,
  });
  const collector = new OtelCollector({
    pool,
    log,
    host: config.otel.collectorHost,
    port: config.otel.collectorPort,
    maxBodyBytes: config.otel.maxBodyBytes,
    allowUntokened: config.otel.allowUntokenedIngest,
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
    bindHost: config.mockGateway.bindHost ?? (await dockerHostAddress(docker)),
    advertisedHost,
    python: {
      executable: config.mockGateway.pythonExecutable,
      timeoutMs: config.mockGateway.pythonTimeoutMs,
      memoryMb: config.mockGateway.pythonMemoryMb,
    },
    // OTel posts a gateway intercepts belong to the case whose container sent them.
    otelForward: async (req) => {
      const token = collector.tokenForSource(req.sourceIp);
      if (!token) {
        return { status: 403, headers: { 'content-type': 'application/json' }, body: Buffer.from('{"ok":false,"error":"unknown source"}') };
      }
      const r = await collector.ingestForCase(token, { path: req.path, headers: req.headers, body: req.body });
      return { status: r.status, headers: r.headers, body: Buffer.from(r.body) };
    },
  });
  const liveContainers = new Semaphore(config.docker.maxLiveContainers);
  const stopObserving = metrics?.observeWorker({
    dockerOperations: ops,
    dockerOperationsLimit: config.docker.maxConcurrentOperations,
    liveContainers,
    liveContainersLimit: config.docker.maxLiveContainers,
  });
  const activities = createActivities({
    config,
    log,
    pool,
    sandbox,
    images: new ImagePuller(docker, ops, log),
    liveContainers,
    runRequests: new RunRequestCache(pool),
    telemetry: createCaseTelemetry({ pool, log, flushGraceMs: config.otel.flushGraceMs }),
    collector,
    collectorUrl: `http://${advertisedHost}:${collectorPort}`,
    gateways,
  });

  const reaperParams: OrphanReaperParams = {
    sandbox,
    log,
    minAgeSeconds: config.sandbox.reaperMinAgeSeconds,
    // A container is wanted while its case row is active and its workflow is still open; a container
    // of a killed worker's attempt is removed by the retried attempt itself (heartbeat details).
    isStillWanted: async (labels) => {
      const experimentId = Number(labels[LABELS.experimentId]);
      const runCaseId = Number(labels[LABELS.runCaseId]);
      const workflowId = labels[LABELS.workflowId];
      if (!Number.isSafeInteger(experimentId) || !Number.isSafeInteger(runCaseId) || !workflowId) return false;
      const status = (await getCaseStatuses(pool, experimentId, [runCaseId])).get(runCaseId);
      if (status === undefined || isTerminalStatus(status)) return false;
      try {
        const d = await client.workflow.getHandle(workflowId).describe();
        return d.status.name === 'RUNNING';
      } catch {
        return false;
      }
    },
  };
  const reaper = metrics ? new MeteredOrphanReaper(reaperParams, metrics) : new OrphanReaper(reaperParams);

  const tracing = await workerTracingOptions(deps.tracing ?? null, { workflowBundlePath: config.worker.workflowBundlePath, log });
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
    // Cancellations reach an activity only in heartbeat responses. The SDK would send at most one
    // heartbeat per 0.8 × heartbeatTimeout (24 s): a canceled case could keep its container that long.
    // With this cap every container-phase heartbeat (HEARTBEAT_INTERVAL_MS) goes out.
    maxHeartbeatThrottleInterval: '1s',
    // Tracing first: its RunActivity span then also covers the metrics interceptor's time.
    interceptors: {
      activity: [...tracing.activity, ...(metrics ? [activityMetricsInterceptor(metrics, Object.keys(activities))] : [])],
      workflowModules: tracing.workflowModules,
    },
    ...(tracing.sinks ? { sinks: tracing.sinks } : {}),
  });

  const startReaper = async () => {
    const swept = await reaper.sweep().catch((err: unknown) => {
      log.warn({ code: 'E_SANDBOX_REAPER_FAILED', err }, 'orphan sweep failed');
      return null;
    });
    if (swept && swept.removed.length > 0) log.info({ code: 'SANDBOX_ORPHANS_REMOVED', removed: swept.removed.length }, 'orphans removed');
    reaper.start(config.sandbox.reaperIntervalSeconds);
    // Sealed networks of a crashed worker's cases (Docker's address pool is small).
    await reapSealedNetworks(docker, config.sandbox.reaperMinAgeSeconds * 1000).catch((err: unknown) =>
      log.warn({ code: 'E_SANDBOX_REAPER_FAILED', err }, 'sealed network sweep failed'),
    );
  };

  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await reaper.stop();
    await connection.close();
    await collector.stop();
    stopObserving?.();
  };

  return {
    worker,
    reaper,
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
  };
}
