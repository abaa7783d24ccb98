import { createHash } from 'node:crypto';
import type { CaseStatus } from '../src/domain/case-status';
import type { CaseFinalSummary, FinalizeCaseInput } from '../src/domain/activity-contract';
import { errorText } from '../src/domain/errors';
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
  type CaseResultRow,
  type CaseScore,
} from '../src/db/run-case-repository';
import { caseActivity } from './activity-boundary';
import type { RunRequests } from './activity-deps';
import { computeTrajectory, type CaseTrajectoryDeps } from './case-trajectory';
import { cacheArtifacts, rememberResult, type ResultCacheStoreDeps } from './task-case';

export interface CaseFinalizationDeps extends CaseTrajectoryDeps, ResultCacheStoreDeps {
  runRequests: RunRequests;
  /** To remove what a dead attempt left running when a case ends not executed (absent: nothing to remove). */
  sandbox?: {
    remove(containerIdOrName: string): Promise<void>;
    listManagedContainers(filter: { workflowId: string; runCaseId: number }): Promise<Array<{ id: string }>>;
  };
}

const sha256Hex = (s: string) => createHash('sha256').update(s).digest('hex');

/**
 * The final persist of one case into run_cases (CONTRACT §3.1 item 3) from what the earlier phases
 * stored. Idempotent and cheap to retry: it never touches Docker or a judge. The write is guarded,
 * so a case canceled meanwhile stays canceled.
 */
export function createCaseFinalization(deps: CaseFinalizationDeps) {
  const finalizeFromPhases = createCaseFinalizer(deps);
  async function finalizeCase(ref: FinalizeCaseInput): Promise<CaseFinalSummary> {
    // The container phase's retries ran out (e.g. its attempts died with the worker): a container
    // of a dead attempt may still run. It goes now, not at a later reaper sweep.
    if (ref.notExecutedError !== null && deps.sandbox) await removeLeftovers(ref);
    const phases = ref.discardPhases ? null : await loadCasePhases(deps.pool, ref.workflowId, ref.runCaseId);
    return finalizeFromPhases(ref, phases);
  }

  /** Best effort: what is left is the reaper's (its row is terminal once this case is persisted). */
  async function removeLeftovers(ref: FinalizeCaseInput): Promise<void> {
    const sandbox = deps.sandbox;
    if (!sandbox) return;
    try {
      const left = await sandbox.listManagedContainers({
        workflowId: ref.workflowId,
        runCaseId: ref.runCaseId,
      });
      for (const c of left) await sandbox.remove(c.id);
      if (left.length > 0)
        deps.log.info(
          { code: 'CASE_LEFTOVER_CONTAINERS_REMOVED', run_case_id: ref.runCaseId, removed: left.length },
          "a dead attempt's containers removed",
        );
    } catch (err) {
      deps.log.warn(
        { code: 'E_SANDBOX_REMOVE_FAILED', run_case_id: ref.runCaseId, err: errorText(err) },
        'leftover containers not removed; the orphan reaper removes them',
      );
    }
  }
  return { finalizeCase: caseActivity(finalizeCase) };
}

/**
 * The final persist from the phases already in hand (the finalize activity loads them; the container
 * phase's fast path has them). A missing trajectory is collected here and stored.
 */
export function createCaseFinalizer(deps: CaseFinalizationDeps) {
  const { pool } = deps;

  return async function finalizeFromPhases(
    ref: FinalizeCaseInput,
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

    // The case's result event (and the run's, if this closes it) lands in the same transaction.
    const persist = (row: CaseResultRow) =>
      persistCaseResult(pool, row, { workflowId, resultEvents: deps.resultEvents });
    const persisted = await persist({
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
      // Our addition (the original never wrote artifacts_json): what the mock gateway answered,
      // and whether the result is a reused one.
      artifacts: {
        ...(raw.mockRequests ? { mock_gateway: { requests: raw.mockRequests } } : {}),
        ...cacheArtifacts(raw),
      },
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
    await rememberResult(deps, { workflowId, runCaseId, raw, trajectory });
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
