import { DefaultLogger, makeTelemetryFilterString, Runtime, type LogLevel } from '@temporalio/worker';
import type { Logger } from '../logger';
import { MetricsPortInUseError } from '../metrics/errors';
import { errorText } from '../domain/errors';

let installed = false;

/**
 * Sends the Temporal SDK's own log lines (worker state changes, workflow task failures) through our
 * pino logger instead of the console, so a process writes one JSON-lines stream. Once per process,
 * right before the first worker is created: installing creates the native runtime, which keeps the
 * process alive until its last worker has shut down — so never call it where no worker follows.
 */
export function installTemporalLogging(
  log: Logger,
  level: LogLevel = 'WARN',
  opts: {
    /**
     * The core's own Prometheus exporter (TEMPORAL_METRICS_PORT): poll, slot and workflow-task
     * metrics under `temporal_`, on its own port since the core serves them itself.
     */
    prometheus?: { host: string; port: number };
  } = {},
): void {
  if (installed) return;
  const sdk = log.child({ component: 'temporal-sdk' });
  const prometheus = opts.prometheus;
  const bindAddress = prometheus
    ? `${prometheus.host.includes(':') ? `[${prometheus.host}]` : prometheus.host}:${prometheus.port}`
    : undefined;
  try {
    installRuntime(sdk, level, bindAddress);
  } catch (err) {
    if (prometheus && /address already in use/i.test(errorText(err))) {
      throw new MetricsPortInUseError('TEMPORAL_METRICS_PORT', prometheus.host, prometheus.port);
    }
    throw err;
  }
  installed = true;
  if (bindAddress)
    log.info(
      { code: 'TEMPORAL_METRICS_STARTED', bind_address: bindAddress },
      'temporal core metrics listening',
    );
}

function installRuntime(sdk: Logger, level: LogLevel, prometheusBindAddress: string | undefined): void {
  Runtime.install({
    // Our processes handle SIGINT/SIGTERM themselves (drain, then exit); the SDK's own handlers
    // would also swallow the signal in a process that has no worker.
    shutdownSignals: [],
    // The native core's own lines (e.g. failing workflow tasks) are forwarded here too.
    telemetryOptions: {
      logging: { filter: makeTelemetryFilterString({ core: level, other: level }), forward: {} },
      ...(prometheusBindAddress ? { metrics: { prometheus: { bindAddress: prometheusBindAddress } } } : {}),
    },
    logger: new DefaultLogger(level, (entry) => {
      const fields = { ...entry.meta, sdk_level: entry.level };
      switch (entry.level) {
        case 'ERROR':
          sdk.error(fields, entry.message);
          break;
        case 'WARN':
          sdk.warn(fields, entry.message);
          break;
        case 'INFO':
          sdk.info(fields, entry.message);
          break;
        default:
          sdk.debug(fields, entry.message);
      }
    }),
  });
}
