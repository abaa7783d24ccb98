import { createHash } from 'node:crypto';
import type { CaseStatus } from '../src/domain/case-status';
import type { CaseFinalSummary, CaseRef } from '../src/domain/experiment-run';
import { decideScoring } from '../src/domain/judge-score';
import { buildRuntimeSnapshot } from '../src/domain/runtime-snapshot';
import { extractUsage } from '../src/domain/usage';
import {
  loadCasePhases,
  saveCaseTrajectory,
  type CasePhases,
  type CaseRawResult,
} from '../src/db/case-result-repository';
import {
  getCaseStatuses,
  persistCaseResult,
  transitionCaseStatus,
  type CaseScore,
} from '../src/db/run-case-repository';
import type { ActivityDeps } from './activity-deps';
import { computeTrajectory } from './case-trajectory';

const sha256Hex = (s: string) => createHash('sha256').update(s).digest('hex');

/**
 * The final persist of one case into run_cases (CONTRACT §3.1 item 3) from what the earlier phases
 * stored. Idempotent and cheap to retry: it never touches Docker or a judge. The write is guarded,
 * so a case canceled meanwhile stays canceled.
 */
export function createCaseFinalization(deps: ActivityDeps) {
  const finalizeFromPhases = createCaseFinalizer(deps);
  async function finalizeCase(ref: CaseRef & { notExecutedError: string | null }): Promise<CaseFinalSummary> {
    return finalizeFromPhases(ref, await loadCasePhases(deps.pool, ref.workflowId, ref.runCaseId));
  }
  return { finalizeCase };
}

/**
 * The final persist from the phases already in hand (the finalize activity loads them; the container
 * phase's fast path has them). A missing trajectory is collected here and stored.
 */
export function createCaseFinalizer(deps: ActivityDeps) {
  const { pool } = deps;

  return async function finalizeFromPhases(
    ref: CaseRef & { notExecutedError: string | null },
    phases: CasePhases | null,
  ): Promise<CaseFinalSummary> {
    const { workflowId, experimentId, runCaseId } = ref;
    const log = deps.log.child({
      workflow_id: workflowId,
      experiment_id: experimentId,
      run_case_id: runCaseId,
    });
    const raw = phases?.result ?? notExecuted(ref.notExecutedError);
    const run = await deps.runRequests.get(workflowId);

    // The fast path and runs started before the trajectory phase existed come here without one
    // (whoever collected it moved the case to `trajectory` then; a case that never ran stays put).
    let trajectory = phases?.trajectory ?? null;
    if (phases && !trajectory) {
      await transitionCaseStatus(pool, { experimentId, runCaseId, to: 'trajectory' });
      if (!raw.telemetryComplete) await deps.telemetry.flushGrace(new Date(raw.finishedAt));
      trajectory = await computeTrajectory(deps, runCaseId, raw);
      await saveCaseTrajectory(pool, workflowId, runCaseId, trajectory);
    }
    const scores: CaseScore[] = phases?.scores?.scores ?? defaultScores(run.request.scorers, raw.status);
    const scorerBreakdown = phases?.scores?.durationsMs ?? {};
    const scorerTotal = Object.values(scorerBreakdown).reduce((a, b) => a + b, 0);
    const otelQueryMs = trajectory?.queryMs ?? 0;
    const latencyMs = raw.timings.totalMs + otelQueryMs;
    const usage = extractUsage(raw.agentUsage, trajectory?.otelUsage ?? null);

    const persisted = await persistCaseResult(pool, {
      runCaseId,
      experimentId,
      status: raw.status,
      agentTrajectory: trajectory?.steps ?? [],
      agentOutput: raw.agentOutput,
      latencyMs,
      logs: raw.logs,
      errorMessage: raw.errorMessage,
      runtimeSnapshot: buildRuntimeSnapshot({
        runtimeSpecRaw: run.request.agent.runtime_spec_json,
        scorers: run.request.scorers,
        runCaseId,
        generatedAtUnixSeconds: Math.floor(Date.now() / 1000),
        sha256Hex,
      }),
      inspectEvalId: workflowId,
      inspectSampleId: String(runCaseId),
      usage: {
        inspect_enabled: false,
        ...usage.usageJson,
        timings_ms: {
          sandbox_connect: raw.timings.sandboxConnectMs,
          case_exec: raw.timings.caseExecMs,
          otel_query: otelQueryMs,
          scorer_total: scorerTotal,
          total: latencyMs,
          scorer_breakdown: scorerBreakdown,
        },
        trajectory_source: trajectory?.source ?? 'none',
      },
      inputTokens: usage.inputTokens,
      outputTokens: usage.outputTokens,
      startedAt: new Date(raw.startedAt),
      // Our addition (the original never wrote artifacts_json): what the mock gateway answered.
      ...(raw.mockRequests ? { artifacts: { mock_gateway: { requests: raw.mockRequests } } } : {}),
      scores,
    });

    if (!persisted) {
      // The row left the active set (canceled by the platform or by us): report what it is now.
      const now = (await getCaseStatuses(pool, experimentId, [runCaseId])).get(runCaseId) as
        CaseStatus | undefined;
      log.info(
        { code: 'CASE_PERSIST_SKIPPED', status: now },
        'case no longer active; result kept out of run_cases',
      );
      return { status: now ?? 'canceled', errorMessage: null, persisted: false };
    }
    if (raw.status === 'success') {
      log.info(
        {
          code: 'CASE_COMPLETED',
          latency_ms: latencyMs,
          docker_start_ms: raw.timings.sandboxConnectMs,
          case_exec_ms: raw.timings.caseExecMs,
          otel_query_ms: otelQueryMs,
          scorer_ms: scorerTotal,
        },
        'case completed',
      );
    } else {
      log.error(
        { code: 'E_CASE_FAILED', status: raw.status, error: raw.errorMessage, logs: raw.logs.slice(0, 512) },
        'case failed',
      );
    }
    return { status: raw.status, errorMessage: raw.errorMessage, persisted: true };
  };
}

/**
 * Scores of a case the score phase did not judge (not executed, failed, no configured scorer, or
 * a run from before the scoring phase): the §7.2 sentinels, which need no judge call.
 */
function defaultScores(
  scorers: Array<{ id: number; scorer_key: string; scorer_config: Record<string, unknown> }>,
  status: string,
): CaseScore[] {
  const list = scorers.length > 0 ? scorers : [{ id: 0, scorer_key: 'task_success', scorer_config: {} }];
  return list.flatMap((s) => {
    const decision = decideScoring(status, s.scorer_config);
    if (decision.kind !== 'default') return [];
    return [
      {
        scorerKey: s.scorer_key,
        evaluatorId: s.id,
        score: decision.score,
        reason: decision.reason,
        rawResult: { ...decision.rawResult, fallback: true, status },
      },
    ];
  });
}

function notExecuted(error: string | null): CaseRawResult {
  const now = new Date().toISOString();
  const message = error ?? 'E_CASE_NOT_EXECUTED';
  return {
    status: 'failed',
    errorMessage: message,
    exitCode: 1,
    agentOutput: null,
    logs: message,
    stdoutTrajectory: null,
    agentUsage: null,
    timings: { sandboxConnectMs: 0, caseExecMs: 0, totalMs: 0 },
    startedAt: now,
    finishedAt: now,
    image: '',
    containerName: null,
    attempt: 0,
  };
}
