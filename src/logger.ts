import pino from 'pino';

/**
 * pino JSON lines. Every line that corresponds to a CONTRACT §10 event carries the code in a
 * `code` field, e.g. `log.info({ code: 'MESSAGE_RECEIVED', message_id }, 'message received')`.
 * Secret-looking keys are censored at any depth we know of, so a careless `{ scorer }` cannot leak.
 */
export type Logger = pino.Logger;

const REDACTED_PATHS = [
  'api_key',
  '*.api_key',
  '*.*.api_key',
  '*.*.*.api_key',
  'password',
  '*.password',
  '*.*.password',
  'authorization',
  '*.authorization',
  '*.headers.authorization',
  '*.headers["x-api-key"]',
];

export function createLogger(
  opts: { level?: string; name?: string; destination?: pino.DestinationStream } = {},
): Logger {
  const options: pino.LoggerOptions = {
    level: opts.level ?? 'info',
    name: opts.name ?? 'agentbench',
    base: { pid: process.pid },
    redact: { paths: REDACTED_PATHS, censor: '[REDACTED]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return opts.destination ? pino(options, opts.destination) : pino(options);
}
