import type pg from 'pg';
import { saveCaseResult } from '../src/db/case-result-repository';
import { isPermanentDatabaseError } from '../src/db/errors';
import { errorText } from '../src/domain/errors';
import type { Logger } from '../src/logger';
import type { LiveAttempts } from './case-execution';
import type { CaseResultSpool } from './case-result-spool';
import { afterCommandLost } from './case-record';

/**
 * Spool entries nobody came back for: a worker killed after its agent finished whose retry ran on
 * another host, or whose run ended meanwhile. Each entry old enough is stored first (first write
 * wins: a record Postgres already holds is kept, this one is dropped) and only then removed, so
 * the sweep never loses a finished result; with Postgres away nothing is removed. The spool is the
 * deployment's own (FileCaseResultSpool), so entries of another deployment on this host are never
 * touched. `minAgeMs` keeps it off entries an attempt of this process is still storing.
 */
export async function sweepCaseResultSpool(deps: {
  spool: CaseResultSpool;
  pool: pg.Pool;
  log: Logger;
  minAgeMs: number;
  /** Attempts running in this process: their entries are theirs to store (after command, removal). */
  liveAttempts: Pick<LiveAttempts, 'has'>;
}): Promise<{ stored: number; kept: number }> {
  const { spool, pool, log } = deps;
  let stored = 0;
  let kept = 0;
  for (const entry of await spool.entriesOlderThan(deps.minAgeMs)) {
    if (deps.liveAttempts.has(entry.workflowId, entry.runCaseId)) continue;
    try {
      const record = await spool.read(entry.workflowId, entry.runCaseId);
      // Cut before its after command: stored as the attempt's retry would store it, never as a success.
      if (record)
        await saveCaseResult(
          pool,
          entry.workflowId,
          entry.runCaseId,
          record.complete ? record.raw : afterCommandLost(record.raw, log),
        );
      await spool.discard(entry.workflowId, entry.runCaseId);
      stored++;
    } catch (err) {
      if (isPermanentDatabaseError(err)) {
        // Postgres will never take it (its run is gone): keeping it would only grow the spool.
        await spool.discard(entry.workflowId, entry.runCaseId).catch(() => undefined);
        log.error(
          {
            code: 'E_CASE_SPOOL_DISCARDED',
            workflow_id: entry.workflowId,
            run_case_id: entry.runCaseId,
            err: errorText(err),
          },
          'a spooled record Postgres refuses for good was removed',
        );
        continue;
      }
      kept++;
      log.warn(
        {
          code: 'E_CASE_SPOOL_SWEEP_FAILED',
          workflow_id: entry.workflowId,
          run_case_id: entry.runCaseId,
          err: errorText(err),
        },
        'a spooled record could not be stored; it is kept for the next sweep',
      );
    }
  }
  if (stored > 0) log.info({ code: 'CASE_SPOOL_SWEPT', stored }, 'old spooled records stored and removed');
  return { stored, kept };
}
