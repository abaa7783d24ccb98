import { setTimeout as delay } from 'node:timers/promises';
import { isPermanentDatabaseError } from '../src/db/errors';
import { errorText } from '../src/domain/errors';
import type { Logger } from '../src/logger';
import { INFRA_OUTAGE_BUDGET_MS } from '../src/domain/retry-budget';

/** Socket-level codes of a service that is down, restarting or unreachable (node, node-postgres). */
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  // Postgres: connection failures (class 08), admin/crash shutdown (57P01–57P03), too many connections.
  '08000',
  '08001',
  '08003',
  '08004',
  '08006',
  '57P01',
  '57P02',
  '57P03',
  '53300',
]);

/** Messages of the same, where the client gives no code (node-postgres, docker-modem). */
const UNREACHABLE_TEXT =
  /connection terminated|connection refused|timeout exceeded when trying to connect|socket hang up|ECONNREFUSED|ECONNRESET|EPIPE|ENOENT[^\n]*\.sock|the database system is (starting up|shutting down)|Client has encountered a connection error/i;

/**
 * Whether `err` (or one of its causes) says a service we depend on is unreachable right now, as
 * opposed to answering "no": only such errors are waited out; a permanent database error never is.
 */
export function isServiceUnreachable(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e !== null && e !== undefined && depth < 6; depth++) {
    if (isPermanentDatabaseError(e)) return false;
    const { code, syscall } = e as { code?: unknown; syscall?: unknown };
    if (typeof code === 'string' && UNREACHABLE_CODES.has(code)) return true;
    // A socket that is not there (dockerd restarting) — not any missing file or program.
    if (code === 'ENOENT' && syscall === 'connect') return true;
    if (UNREACHABLE_TEXT.test(errorText(e))) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

export interface RideOutOptions {
  /** Names the step in the log line (`INFRA_OUTAGE_WAIT`). */
  what: string;
  log: Logger;
  /** Called before every wait: the activity's heartbeat, so the wait keeps it alive. */
  onWait?: () => void;
  /** Stops waiting (the activity was canceled): the last error is thrown. */
  signal?: AbortSignal;
  budgetMs?: number;
}

/**
 * `fn`, retried while it fails with isServiceUnreachable, for up to budgetMs of wall time (1 s,
 * doubling, at most 5 s apart). `fn` must be idempotent. Any other error, or the budget spent,
 * throws the last error.
 */
export async function rideOutOutage<T>(fn: () => Promise<T>, opts: RideOutOptions): Promise<T> {
  const deadline = Date.now() + (opts.budgetMs ?? INFRA_OUTAGE_BUDGET_MS);
  let waitMs = 1_000;
  for (let tries = 1; ; tries++) {
    try {
      return await fn();
    } catch (err) {
      if (!isServiceUnreachable(err) || Date.now() + waitMs > deadline || opts.signal?.aborted) throw err;
      if (tries === 1 || tries % 10 === 0)
        opts.log.warn(
          { code: 'INFRA_OUTAGE_WAIT', step: opts.what, tries, err: errorText(err) },
          'a service is unreachable; waiting for it',
        );
      opts.onWait?.();
      await delay(waitMs, undefined, opts.signal ? { signal: opts.signal } : {}).catch(() => undefined);
      if (opts.signal?.aborted) throw err;
      waitMs = Math.min(waitMs * 2, 5_000);
    }
  }
}
