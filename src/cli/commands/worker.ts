import { metricsPortFor } from '../../config';
import { createDockerClient, pingDocker } from '../../docker/docker-client';
import { WorkerMetrics } from '../../metrics/orchestrator-metrics';
import { connectTemporalClient } from '../../temporal/connection';
import { createCaseWorker } from '../../temporal/case-worker';
import { startOrchestratorTracing } from '../../tracing/orchestrator-tracing';
import { installTemporalRuntime, serveMetrics } from '../metrics-endpoint';
import { CliError, loadConfigOrExit, openDatabase, processLogger, stopSignal } from '../process-context';

/** `benchctl worker`: serves the task queue until SIGINT/SIGTERM, then drains in-flight work. */
export async function workerCommand(): Promise<void> {
  const config = loadConfigOrExit();
  const log = processLogger(config, 'worker');
  // Ports first: a taken one stops the start at once, before any connection is opened.
  const metricsPort = metricsPortFor(config, 'worker');
  const metrics = metricsPort > 0 ? new WorkerMetrics() : undefined;
  const metricsServer = metrics ? await serveMetrics(metrics.registry, config, log, metricsPort) : null;
  // Null unless ORCHESTRATOR_OTLP_ENDPOINT is set.
  const tracing = startOrchestratorTracing(config, { service: 'agentbench-worker', log });
  try {
    installTemporalRuntime(config, log);
    const docker = createDockerClient(config.docker.socketPath);
    if (!(await pingDocker(docker, 5000))) {
      throw new CliError(`Docker does not answer at ${config.docker.socketPath} (run: npm run setup, or benchctl doctor)`);
    }
    const pool = await openDatabase(config, log);
    const client = await connectTemporalClient(config);
    // The worker's own client only describes runs (orphan reaper): untraced, like the reaper itself.
    const worker = await createCaseWorker({ config, log, pool, docker, client, metrics, tracing });
    log.info({ code: 'WORKER_STARTED', task_queue: config.temporal.taskQueue, temporal: config.temporal.address }, 'worker started');
    void stopSignal().then(async (signal) => {
      log.info({ code: 'WORKER_STOPPING', signal }, 'draining in-flight activities');
      await worker.shutdown();
    });
    try {
      await worker.run();
    } finally {
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
