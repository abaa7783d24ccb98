import { metricsPortFor, requireBridgeSettings } from '../../config';
import { postgresCheck, temporalCheck } from '../../metrics/dependency-checks';
import { BridgeMetrics } from '../../metrics/orchestrator-metrics';
import { Readiness } from '../../metrics/readiness';
import { serveMetrics } from '../metrics-endpoint';
import { startBridge } from '../../../bridge/experiment-bridge';
import { createRedis, MessageLocks } from '../../../bridge/redis-lock';
import { connectTemporalClient } from '../../temporal/connection';
import { startRequestedRun } from '../../temporal/run-starter';
import { startOrchestratorTracing } from '../../tracing/orchestrator-tracing';
import { CliError, loadConfigOrExit, openDatabase, processLogger, stopSignal } from '../process-context';
import { hostname } from 'node:os';
import { errorText } from '../../domain/errors';

/** Per dependency check of `/readyz`; below the probes' timeoutSeconds in deploy/k8s. */
const PROBE_TIMEOUT_MS = 3_000;

/** `benchctl bridge`: RabbitMQ → Temporal, until SIGINT/SIGTERM. */
export async function bridgeCommand(): Promise<void> {
  const config = loadConfigOrExit();
  const log = processLogger(config, 'bridge');
  let settings: ReturnType<typeof requireBridgeSettings>;
  try {
    settings = requireBridgeSettings(config);
  } catch (err) {
    throw new CliError(errorText(err), 2);
  }
  // Before any connection: a taken port stops the start at once.
  const metricsPort = metricsPortFor(config, 'bridge');
  const metrics = metricsPort > 0 ? new BridgeMetrics() : undefined;
  const readiness = new Readiness(PROBE_TIMEOUT_MS);
  const metricsServer = metrics
    ? await serveMetrics(metrics.registry, config, log, metricsPort, readiness)
    : null;
  // Null unless ORCHESTRATOR_OTLP_ENDPOINT is set.
  const tracing = startOrchestratorTracing(config, { service: 'agentbench-bridge', log });
  try {
    const pool = await openDatabase(config, log);
    const client = await connectTemporalClient(config, { tracing });
    const redis = createRedis(settings.redis);
    const locks = new MessageLocks(
      redis,
      {
        processingSeconds: settings.redis.processingLockTtlSeconds,
        processedSeconds: settings.redis.processedTtlSeconds,
      },
      log,
      `${hostname()}:${process.pid}`,
    );
    const bridge = await startBridge({
      amqpUrl: settings.amqpUrl,
      queue: config.rabbitmq.queue,
      prefetch: config.rabbitmq.prefetch,
      startMaxAttempts: config.rabbitmq.startMaxAttempts,
      redis,
      locks,
      log,
      metrics,
      tracer: tracing?.tracer,
      startRun: (message, meta) =>
        startRequestedRun({ client, pool, config, log }, message, meta.dedupSuffix),
    });
    readiness.serve({
      temporal: temporalCheck(client.connection, PROBE_TIMEOUT_MS),
      // The bridge's own consumer, not a new connection: ready means "taking messages now".
      rabbitmq: () =>
        bridge.consuming()
          ? Promise.resolve()
          : Promise.reject(new Error('not consuming (reconnecting to RabbitMQ)')),
      postgres: postgresCheck(pool),
    });
    log.info(
      { code: 'BRIDGE_STARTED', queue: config.rabbitmq.queue, prefetch: config.rabbitmq.prefetch },
      'bridge started',
    );
    const signal = await stopSignal();
    readiness.markStopping();
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
