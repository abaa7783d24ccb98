import { Redis } from 'ioredis';
import type { Config } from '../src/config';
import type { Logger } from '../src/logger';
import { errorText } from '../src/domain/errors';

/**
 * The cross-system message lock of CONTRACT §8.1, shared with the Python consumer so both can run
 * side by side during a migration: same keys, same TTLs, processed value "1".
 *
 * Where we differ (§13.2, §13.4):
 * - our processing value is `agentbench:<ownerId>`, so we can tell our own (possibly crashed)
 *   bridges from the old consumer, and deletes are owner-checked;
 * - a lock held by one of our bridges does not drop a redelivery: starting the workflow again is
 *   harmless because Temporal rejects a duplicate workflow id;
 * - `processed` is set as soon as the workflow START is durable, because from then on Temporal
 *   owns the run. That also stops an old consumer, during a migration, from executing a
 *   redelivery of a message we already handed to Temporal;
 * - Redis errors never fail a message: the lock degrades to "Temporal dedup only" (ARCHITECTURE §5.4).
 */

export type AcquireResult = 'acquired' | 'processed' | 'held-by-other' | 'degraded';

interface LockTtl {
  processingSeconds: number;
  processedSeconds: number;
}

/** CONTRACT §9 defaults of CONSUMER_REDIS_PROCESSING_LOCK_TTL_SECONDS / _PROCESSED_TTL_SECONDS. */
export const CONTRACT_LOCK_TTL: LockTtl = { processingSeconds: 300, processedSeconds: 86400 };

const OWNER_PREFIX = 'agentbench:';
const REDIS_TIMEOUT_MS = 5000;

export function processingKey(suffix: string): string {
  return `benchmark:consumer:processing:${suffix}`;
}

export function processedKey(suffix: string): string {
  return `benchmark:consumer:processed:${suffix}`;
}

/** A client that fails fast instead of queueing commands while Redis is away. */
export function createRedis(
  config: Pick<Config['redis'], 'host' | 'port' | 'username' | 'password' | 'db'>,
): Redis {
  return new Redis({
    host: config.host,
    port: config.port,
    username: config.username,
    password: config.password,
    db: config.db,
    connectTimeout: REDIS_TIMEOUT_MS,
    commandTimeout: REDIS_TIMEOUT_MS,
    maxRetriesPerRequest: 1,
    enableOfflineQueue: false,
  });
}

// KEYS[1] processing, KEYS[2] processed; ARGV[1] our value, ARGV[2] owner prefix, ARGV[3] ttl.
// One script so "check processed, then take the lock" cannot interleave with another consumer.
const ACQUIRE_SCRIPT = `
if redis.call('EXISTS', KEYS[2]) == 1 then return 'processed' end
local holder = redis.call('GET', KEYS[1])
if holder == false or string.sub(holder, 1, string.len(ARGV[2])) == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
  if holder == false or holder == ARGV[1] then return 'acquired' end
  return 'taken-over'
end
return 'held-by-other'
`;

// KEYS[1] processing, KEYS[2] processed; ARGV[1] our value, ARGV[2] processed ttl.
const MARK_PROCESSED_SCRIPT = `
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
`;

// KEYS[1] processing; ARGV[1] our value.
const RELEASE_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

export class MessageLocks {
  private readonly value: string;
  private degraded = false;

  constructor(
    private readonly redis: Redis,
    private readonly ttl: LockTtl,
    private readonly log: Logger,
    ownerId: string,
  ) {
    this.value = `${OWNER_PREFIX}${ownerId}`;
    // Connection errors surface here before any command fails; handling them also keeps ioredis
    // from printing "Unhandled error event" on every reconnect attempt.
    redis.on('error', (err: Error) => this.noteFailure(err));
    redis.on('ready', () => this.noteHealthy());
  }

  /** True from a Redis failure until Redis answers again: dedup is down to Temporal workflow ids. */
  get isDegraded(): boolean {
    return this.degraded;
  }

  /**
   * Bounded wait for the client's first connection, so the first message is not handled as
   * "degraded" merely because the client was still connecting. A connection error or the timeout
   * ends the wait too: degraded mode then applies.
   */
  async waitUntilReady(timeoutMs = REDIS_TIMEOUT_MS): Promise<void> {
    if (this.redis.status !== 'connecting' && this.redis.status !== 'connect') return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.redis.off('ready', done);
        this.redis.off('error', done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.redis.once('ready', done);
      this.redis.once('error', done);
    });
  }

  async acquire(suffix: string): Promise<AcquireResult> {
    try {
      const outcome = await this.redis.eval(
        ACQUIRE_SCRIPT,
        2,
        processingKey(suffix),
        processedKey(suffix),
        this.value,
        OWNER_PREFIX,
        this.ttl.processingSeconds,
      );
      this.noteHealthy();
      if (outcome === 'processed' || outcome === 'held-by-other') return outcome;
      if (outcome === 'taken-over') {
        this.log.info(
          { key: processingKey(suffix) },
          'took over a processing lock left by another agentbench bridge',
        );
      }
      return 'acquired';
    } catch (err) {
      this.noteFailure(err);
      return 'degraded';
    }
  }

  async markProcessed(suffix: string): Promise<void> {
    try {
      await this.redis.eval(
        MARK_PROCESSED_SCRIPT,
        2,
        processingKey(suffix),
        processedKey(suffix),
        this.value,
        this.ttl.processedSeconds,
      );
      this.noteHealthy();
    } catch (err) {
      this.noteFailure(err);
    }
  }

  async release(suffix: string): Promise<void> {
    try {
      await this.redis.eval(RELEASE_SCRIPT, 1, processingKey(suffix), this.value);
      this.noteHealthy();
    } catch (err) {
      this.noteFailure(err);
    }
  }

  private noteFailure(err: unknown): void {
    if (this.degraded) return;
    this.degraded = true;
    this.log.warn(
      { code: 'E_REDIS_DEGRADED', error: errorText(err) },
      'redis unavailable: continuing with Temporal workflow-id dedup only',
    );
  }

  private noteHealthy(): void {
    if (!this.degraded) return;
    this.degraded = false;
    this.log.info('redis available again: message locks restored');
  }
}
