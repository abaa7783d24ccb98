import { DefaultLogger, makeTelemetryFilterString, Runtime, type LogLevel } from '@temporalio/worker';
import type { Logger } from '../logger';

let installed = false;

/**
 * Sends the Temporal SDK's own log lines (worker state changes, workflow task failures) through our
 * pino logger instead of the console, so a process writes one JSON-lines stream. Once per process,
 * right before the first worker is created: installing creates the native runtime, which keeps the
 * process alive until its last worker has shut down — so never call it where no worker follows.
 */
export function installTemporalLogging(log: Logger, level: LogLevel = 'WARN'): void {
  if (installed) return;
  installed = true;
  const sdk = log.child({ component: 'temporal-sdk' });
  Runtime.install({
    // Our processes handle SIGINT/SIGTERM themselves (drain, then exit); the SDK's own handlers
    // would also swallow the signal in a process that has no worker.
    shutdownSignals: [],
    // The native core's own lines (e.g. failing workflow tasks) are forwarded here too.
    telemetryOptions: { logging: { filter: makeTelemetryFilterString({ core: level, other: level }), forward: {} } },
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
