import { metricsPortFor } from '../../config';
import { createDockerClient, pingDocker } from '../../docker/docker-client';
import { dockerCheck, postgresCheck, temporalCheck } from '../../metrics/dependency-checks';
import { WorkerMetrics } from '../../metrics/orchestrator-metrics';
import { Readiness } from '../../metrics/readiness';
import { connectTemporalClient } from '../../temporal/connection';
import { createCaseWorker } from '../../temporal/case-worker';
import { startOrchestratorTracing } from '../../tracing/orchestrator-tracing';
import { startResultEventRelay } from '../../result-events/relay-from-config';
import { installTemporalRuntime, serveMetrics } from '../metrics-endpoint';
import { CliError, loadConfigOrExit, openDatabase, processLogger, stopSignal } from '../process-context';

/** Per dependency check of `/readyz`; below the probes' timeoutSeconds in deploy/k8s. */
const PROBE_TIMEOUT_MS = 3_000;

/**
 * `benchctl worker`: serves the task queue until SIGINT/SIGTERM, then stops polling and gives
 * in-flight activities WORKER_SHUTDOWN_GRACE_SECONDS to finish before canceling them.
 */
export async function workerCommand(): Promise<void> {
  const config = loadConfigOrExit();
  const log = processLogger(config, 'worker');
  // Ports first: a taken one stops the start at once, before any connection is opened.
  const metricsPort = metricsPortFor(config, 'worker');
  const metrics = metricsPort > 0 ? new WorkerMetrics() : undefined;
  const readiness = new Readiness(PROBE_TIMEOUT_MS);
  const metricsServer = metrics
    ? await serveMetrics(metrics.registry, config, log, metricsPort, readiness)
    : null;
  // Null unless ORCHESTRATOR_OTLP_ENDPOINT is set.
  const tracing = startOrchestratorTracing(config, { service: 'agentbench-worker', log });
  try {
    installTemporalRuntime(config, log);
    const docker = createDockerClient(config.docker.socketPath);
    if (!(await pingDocker(docker, 5000))) {
      throw new CliError(
        `Docker does not answer at ${config.docker.socketPath} (run: npm run setup, or benchctl doctor)`,
      );
    }
    const pool = await openDatabase(config, log);
    const client = await connectTemporalClient(config);
    // The worker's own client only describes runs (orphan reaper): untraced, like the reaper itself.
    const worker = await createCaseWorker({ config, log, pool, docker, client, metrics, tracing });
    readiness.serve({
      temporal: temporalCheck(client.connection, PROBE_TIMEOUT_MS),
      postgres: postgresCheck(pool),
      docker: dockerCheck(docker, PROBE_TIMEOUT_MS),
    });
    // Publishes the result events this deployment's terminal writes put in the outbox.
    const relay = startResultEventRelay(config, pool, log, metrics?.registry);
    log.info(
      { code: 'WORKER_STARTED', task_queue: config.temporal.taskQueue, temporal: config.temporal.address },
      'worker started',
    );
    void stopSignal().then(async (signal) => {
      readiness.markStopping();
      log.info(
        { code: 'WORKER_STOPPING', signal, grace_seconds: config.worker.shutdownGraceSeconds },
        'draining in-flight activities',
      );
      await worker.shutdown();
    });
    try {
      await worker.run();
    } finally {
      await relay?.stop();
      await client.connection.close();
      await pool.end();
    }
  } finally {
    // After the drain, so the spans of the last activities still leave (bounded, see SHUTDOWN_BUDGET_MS).
    await tracing?.shutdown();
    // Last, so the drain after SIGTERM can still be watched.
    await metricsServer?.stop();
  }
}
