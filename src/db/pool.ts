import pg from 'pg';
import { createLogger, type Logger } from '../logger';

const INT8_OID = 20;

/**
 * BIGINT ids (run_cases.id, experiments.id, COUNT(*)) come back as JS numbers instead of pg's
 * default strings. A value beyond 2^53 would silently lose precision, so it fails the query instead.
 */
function parseInt8(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) {
    throw new RangeError(`BIGINT value ${text} exceeds Number.MAX_SAFE_INTEGER`);
  }
  return n;
}
pg.types.setTypeParser(INT8_OID, parseInt8);

export function createPool(url: string, max = 10, log: Logger = createLogger({ name: 'db' })): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max, application_name: 'agentbench-orchestrator' });
  // An idle client losing its connection (server restart, failover) emits here; without a listener
  // the process would crash. The pool already discarded the client, the next query reconnects.
  pool.on('error', (err) => {
    log.error({ err }, 'idle postgres client error');
  });
  return pool;
}
