import pino from 'pino';
import { isSecretName, REDACTED, redactSecretText } from './domain/secret-redaction';

/**
 * pino JSON lines. Every line that corresponds to a CONTRACT §10 event carries the code in a
 * `code` field, e.g. `log.info({ code: 'MESSAGE_RECEIVED', message_id }, 'message received')`.
 *
 * Secrets are redacted by pattern (src/domain/secret-redaction.ts), not by a list of paths, so a
 * careless `{ scorer }`, `{ headers }` or `{ url }` cannot leak: at any depth of the logged object,
 * of a child logger's bindings and of a serialized error, a string under a secret-named key
 * (`*token*`, `*secret*`, `*password*`, `*api_key*`, `authorization`, …) becomes "[REDACTED]", and
 * every other string — the message included — loses the secrets it spells out: `key=value` and
 * `"key": "value"` pairs, `Bearer …` values, URL query secrets and userinfo passwords.
 */
export type Logger = pino.Logger;

/** Deeper than this, a logged structure is cut: nothing we log is that deep, and it bounds the walk. */
const MAX_DEPTH = 12;
/** A bearer credential standing alone (`Bearer eyJhbGci…`), not after a secret-named key. */
const BEARER_VALUE = /\b(Bearer\s+)[A-Za-z0-9._~+/-]{8,}=*/gi;

/** Every secret redactSecretText or BEARER_VALUE finds needs one of these: most log strings have none. */
const MAY_HOLD_SECRET = /[=:]|bearer/i;

function redactLogText(text: string): string {
  if (!MAY_HOLD_SECRET.test(text)) return text;
  return redactSecretText(text).replace(BEARER_VALUE, `$1${REDACTED}`);
}

function isPlainObject(value: object): value is Record<string, unknown> {
  const proto: unknown = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** Every non-empty string becomes REDACTED: the value of a secret-named key (a string or a list of them). */
function secretValue(value: unknown, seen: WeakSet<object>, depth: number): unknown {
  if (typeof value === 'string') return value === '' ? value : REDACTED;
  if (Array.isArray(value)) return value.map((item: unknown) => secretValue(item, seen, depth + 1));
  return redactLogFields(value, seen, depth);
}

/**
 * A copy of a logged value with its secrets redacted (see the module comment). Errors are
 * serialized as pino serializes `err` (an error's own properties may hold a request's headers),
 * then redacted; class instances other than plain objects and arrays (Buffers, Dates, Maps) are
 * passed through as pino would print them.
 */
function redactLogFields(value: unknown, seen = new WeakSet<object>(), depth = 0): unknown {
  if (typeof value === 'string') return redactLogText(value);
  if (typeof value !== 'object' || value === null) return value;
  if (value instanceof Error) return redactedError(value);
  if (depth > MAX_DEPTH) return '[Truncated]';
  if (seen.has(value)) return '[Circular]';
  seen.add(value);
  try {
    if (Array.isArray(value)) return value.map((item: unknown) => redactLogFields(item, seen, depth + 1));
    if (!isPlainObject(value)) return value;
    const copy: Record<string, unknown> = {};
    for (const key of Object.keys(value)) {
      const item = value[key];
      Object.defineProperty(copy, key, {
        value: isSecretName(key)
          ? secretValue(item, seen, depth + 1)
          : redactLogFields(item, seen, depth + 1),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return copy;
  } finally {
    seen.delete(value);
  }
}

/** pino's error serializer (type, message, stack, cause, own properties), then redacted. */
function redactedError(err: unknown): unknown {
  const serialized: unknown = pino.stdSerializers.err(err as Error);
  // The serialized error's prototype is pino's own; its own properties are what gets printed.
  return typeof serialized === 'object' && serialized !== null
    ? redactLogFields({ ...serialized })
    : redactLogFields(serialized);
}

/** A line's merging object; an Error under `err` is left to the `err` serializer (it keeps its type). */
function redactedRecord(record: Record<string, unknown>): Record<string, unknown> {
  const { err, ...rest } = record;
  const out = redactLogFields(rest) as Record<string, unknown>;
  if (err instanceof Error) out.err = err;
  else if (err !== undefined) out.err = redactLogFields(err);
  return out;
}

export function createLogger(
  opts: { level?: string; name?: string; destination?: pino.DestinationStream } = {},
): Logger {
  const options: pino.LoggerOptions = {
    level: opts.level ?? 'info',
    name: opts.name ?? 'agentbench',
    base: { pid: process.pid },
    formatters: { log: redactedRecord, bindings: redactedRecord },
    serializers: {
      err: redactedError,
      // The message key's serializer sees the message after printf-style interpolation.
      msg: (msg: unknown) => (typeof msg === 'string' ? redactLogText(msg) : msg),
    },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  const logger = opts.destination ? pino(options, opts.destination) : pino(options);
  // pino applies `formatters.bindings` to the root's bindings only, so a child's are redacted here.
  // Children inherit this own property of the root through their prototype: grandchildren too.
  const child = logger.child; // pino's own, from the prototype: `this` decides whose child it is
  const redactingChild = function (
    this: Logger,
    bindings: pino.Bindings,
    childOptions?: pino.ChildLoggerOptions,
  ): Logger {
    return Reflect.apply(child, this, [redactLogFields(bindings), childOptions]) as Logger;
  };
  // pino's child is generic over custom levels; options pass through unchanged, so the type holds.
  logger.child = redactingChild as unknown as Logger['child'];
  return logger;
}
