import type pg from 'pg';
import type { Logger } from '../logger';
import { queryCaseTelemetry, type CaseTelemetry } from './otel-repository';

/** A case's OTel data as the activities read it (activities/case-trajectory's CaseTelemetry). */
interface CaseTelemetryReader {
  /** null when the query failed (logged as E_OTEL_QUERY_FAILED). */
  query(runCaseId: number): Promise<CaseTelemetry | null>;
  /** Waits out what remains of the grace period, after the case finished, for late spans. */
  flushGrace(caseFinishedAt: Date): Promise<void>;
}

/**
 * The activities' view of OTel data: the §4.4 query, where a failure is logged
 * (E_OTEL_QUERY_FAILED) and means "no telemetry", as in the original — the case still persists.
 */
export function createCaseTelemetry(p: {
  pool: pg.Pool;
  log: Logger;
  flushGraceMs: number;
}): CaseTelemetryReader {
  return {
    async query(runCaseId) {
      p.log.debug({ code: 'OTEL_QUERY_START', run_case_id: runCaseId }, 'querying telemetry');
      try {
        const t = await queryCaseTelemetry(p.pool, runCaseId, Date.now());
        p.log.info(
          { code: 'OTEL_QUERY_OK', run_case_id: runCaseId, source: t.source, steps: t.steps.length },
          'telemetry queried',
        );
        return t;
      } catch (err) {
        p.log.error({ code: 'E_OTEL_QUERY_FAILED', run_case_id: runCaseId, err }, 'telemetry query failed');
        return null;
      }
    },
    flushGrace: (finishedAt) => {
      const wait = p.flushGraceMs - (Date.now() - finishedAt.getTime());
      return wait > 0 ? new Promise((resolve) => setTimeout(resolve, wait)) : Promise.resolve();
    },
  };
}
