import type { CaseRef, TrajectorySummary } from '../src/domain/activity-contract';
import {
  loadCasePhases,
  saveCaseTrajectory,
  type CaseRawResult,
  type CaseTrajectory,
} from '../src/db/case-result-repository';
import { transitionCaseStatus } from '../src/db/run-case-repository';
import { caseActivity } from './activity-boundary';
import type { DatabaseDeps } from './activity-deps';

/** The agent's OpenTelemetry data of one case, as trajectory steps (CONTRACT §4.4; src/otel/case-telemetry). */
export interface CaseTelemetry {
  /** null when the query failed (logged): the case then has no telemetry, as in the original. */
  query(runCaseId: number): Promise<{
    steps: unknown[];
    source: 'logs' | 'spans' | 'none';
    usage: { inputTokens: number; outputTokens: number } | null;
  } | null>;
  /** Waits out what remains of the grace period, after the case finished, for late spans. */
  flushGrace(caseFinishedAt: Date): Promise<void>;
}

export interface CaseTrajectoryDeps extends DatabaseDeps {
  telemetry: CaseTelemetry;
}

/**
 * The trajectory of a finished case: the agent's OTel telemetry when there is some (CONTRACT §4.4),
 * else the `trajectory` array of its stdout JSON (§4.5; logged OTEL_FALLBACK_STDOUT), else [].
 */
export async function computeTrajectory(
  deps: Pick<CaseTrajectoryDeps, 'log' | 'telemetry'>,
  runCaseId: number,
  raw: CaseRawResult,
): Promise<CaseTrajectory> {
  const log = deps.log.child({ run_case_id: runCaseId });
  const started = Date.now();
  const telemetry = await deps.telemetry.query(runCaseId);
  const queryMs = Date.now() - started;
  if (telemetry && telemetry.steps.length > 0) {
    return { steps: telemetry.steps, source: telemetry.source, otelUsage: telemetry.usage, queryMs };
  }
  if (raw.stdoutTrajectory) {
    log.info(
      { code: 'OTEL_FALLBACK_STDOUT', steps: raw.stdoutTrajectory.length },
      'no OTel data; stdout trajectory used',
    );
    return { steps: raw.stdoutTrajectory, source: 'stdout', otelUsage: telemetry?.usage ?? null, queryMs };
  }
  return { steps: [], source: 'none', otelUsage: telemetry?.usage ?? null, queryMs };
}

/** The trajectory phase: its own activity, so re-running it never re-runs the agent. */
export function createCaseTrajectory(deps: CaseTrajectoryDeps) {
  async function collectTrajectory(ref: CaseRef): Promise<TrajectorySummary> {
    const { workflowId, experimentId, runCaseId } = ref;
    const phases = await loadCasePhases(deps.pool, workflowId, runCaseId);
    if (!phases) throw new Error(`no container-phase result for case ${runCaseId} of ${workflowId}`);
    if (phases.trajectory) return { source: phases.trajectory.source, steps: phases.trajectory.steps.length };
    await transitionCaseStatus(deps.pool, { experimentId, runCaseId, to: 'trajectory' });
    // Spans are exported asynchronously (§13.13). Once the container is gone nothing can send
    // more; if the container phase saw the collector drain, the telemetry is already complete.
    if (!phases.result.telemetryComplete) await deps.telemetry.flushGrace(new Date(phases.result.finishedAt));
    const trajectory = await computeTrajectory(deps, runCaseId, phases.result);
    await saveCaseTrajectory(deps.pool, workflowId, runCaseId, trajectory);
    return { source: trajectory.source, steps: trajectory.steps.length };
  }
  return { collectTrajectory: caseActivity(collectTrajectory) };
}
