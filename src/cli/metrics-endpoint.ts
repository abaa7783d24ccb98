import type { Registry } from 'prom-client';
import type { Config } from '../config';
import type { Logger } from '../logger';
import { MetricsPortInUseError } from '../metrics/errors';
import { MetricsServer } from '../metrics/metrics-server';
import type { Readiness } from '../metrics/readiness';
import { installTemporalLogging } from '../temporal/runtime-logging';
import { CliError } from './process-context';

/**
 * Serves `registry` (and the probes, `/readyz` answered by `readiness`) on METRICS_HOST:`port` for a
 * long-running command. Called before any connection is opened, so a taken port stops the start at
 * once with one line, and probes see "starting" until the command hands `readiness` its checks.
 */
export async function serveMetrics(
  registry: Registry,
  config: Config,
  log: Logger,
  port: number,
  readiness?: Readiness,
): Promise<MetricsServer> {
  const server = new MetricsServer({
    registry,
    log,
    host: config.metrics.host,
    port,
    portVariable: 'METRICS_PORT',
    readiness,
  });
  try {
    await server.start();
  } catch (err) {
    if (err instanceof MetricsPortInUseError) throw new CliError(err.message);
    throw err;
  }
  return server;
}

/**
 * The Temporal runtime, with the core's Prometheus exporter when TEMPORAL_METRICS_PORT is set.
 * Only where a worker follows (see installTemporalLogging); the worker's own call is then a no-op.
 */
export function installTemporalRuntime(config: Config, log: Logger): void {
  const port = config.metrics.temporalPort;
  try {
    installTemporalLogging(log, 'WARN', port > 0 ? { prometheus: { host: config.metrics.host, port } } : {});
  } catch (err) {
    if (err instanceof MetricsPortInUseError) throw new CliError(err.message);
    throw err;
  }
}
