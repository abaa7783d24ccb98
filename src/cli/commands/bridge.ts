import { metricsPortFor, requireBridgeSettings } from '../../config';
import { BridgeMetrics } from '../../metrics/orchestrator-metrics';
import { serveMetrics } from '../metrics-endpoint';
import { startBridge } from '../../../bridge/experiment-bridge';
import { createRedis, MessageLocks } from '../../../bridge/redis-lock';
import { connectTemporalClient } from '../../temporal/connection';
import { startExperimentRun } from '../../temporal/run-starter';
import { startOrchestratorTracing } from '../../tracing/orchestrator-tracing';
import { CliError, loadConfigOrExit, openDatabase, processLogger, stopSignal } from '../process-context';
import { hostname } from 'node:os';

/** `benchctl bridge`: RabbitMQ → Temporal, until SIGINT/SIGTERM. */
export async function bridgeCommand(): Promise<void> {
  const config = loadConfigOrExit();
  const log = processLogger(config, 'bridge');
  let settings: ReturnType<typeof requireBridgeSettings>;
  try {
    settings = requireBridgeSettings(config);
  } catch (err) {
    throw new CliError(err instanceof Error ? err.message : String(err), 2);
  }
  // Before any connection: a taken port stops the start at once.
  const metricsPort = metricsPortFor(config, 'bridge');
  const metrics = metricsPort > 0 ? new BridgeMetrics() : undefined;
  const metricsServer = metrics ? await serveMetrics(metrics.registry, config, log, metricsPort) : null;
  // Null unless ORCHESTRATOR_OTLP_ENDPOINT is set.
  const tracing = startOrchestratorTracing(config, { service: 'agentbench-bridge', log });
  try {
    const pool = await openDatabase(config, log);
    const client = await connectTemporalClient(config, { tracing });
    const redis = createRedis(settings.redis);
    const locks = new MessageLocks(
      redis,
      { processingSeconds: settings.redis.processingLockTtlSeconds, processedSeconds: settings.redis.processedTtlSeconds },
      log,
      `${hostname()}:${process.pid}`,
    );
    const bridge = await startBridge({
      amqpUrl: settings.amqpUrl,
      queue: config.rabbitmq.queue,
      prefetch: config.rabbitmq.prefetch,
      redis,
      locks,
      log,
      metrics,
      tracer: tracing?.tracer,
      startRun: (message, meta) => startExperimentRun({ client, pool, config, log }, message, meta.dedupSuffix),
    });
    log.info({ code: 'BRIDGE_STARTED', queue: config.rabbitmq.queue, prefetch: config.rabbitmq.prefetch }, 'bridge started');
    const signal = await stopSignal();
    log.info({ code: 'BRIDGE_STOPPING', signal, stats: bridge.stats() }, 'bridge stopping');
    await bridge.stop();
    redis.disconnect();
    await client.connection.close();
    await pool.end();
  } finally {
    await tracing?.shutdown();
    await metricsServer?.stop();
  }
}
