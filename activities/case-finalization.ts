import { createHash } from 'node:crypto';
import type { CaseStatus } from '../src/domain/case-status';
import type { CaseFinalSummary, CaseRef } from '../src/domain/experiment-run';
import { buildRuntimeSnapshot } from '../src/domain/runtime-snapshot';
import { loadCaseResult, type CaseRawResult } from '../src/db/case-result-repository';
import { getCaseStatuses, persistCaseResult, transitionCaseStatus } from '../src/db/run-case-repository';
import type { ActivityDeps } from './activity-deps';

const sha256Hex = (s: string) => createHash('sha256').update(s).digest('hex');

/**
 * The final persist of one case into run_cases (CONTRACT §3.1 item 3), from the container phase's
 * stored record. Idempotent and cheap to retry: it never touches Docker. The write is guarded, so
 * a case canceled meanwhile stays canceled.
 */
export function createCaseFinalization(deps: ActivityDeps) {
  const { pool } = deps;

  async function finalizeCase(ref: CaseRef & { notExecutedError: string | null }): Promise<CaseFinalSummary> {
    const { workflowId, experimentId, runCaseId } = ref;
    const log = deps.log.child({ workflow_id: workflowId, experiment_id: experimentId, run_case_id: runCaseId });
    const raw = (await loadCaseResult(pool, workflowId, runCaseId)) ?? notExecuted(ref.notExecutedError);
    const run = await deps.runRequests.get(workflowId);

    await transitionCaseStatus(pool, { experimentId, runCaseId, to: 'trajectory' });
    const otelStart = Date.now();
    // OTel ingest is not wired yet: the agent's own stdout trajectory is the only source (§4.5).
    const trajectory = raw.stdoutTrajectory ?? [];
    if (raw.stdoutTrajectory) log.info({ code: 'OTEL_FALLBACK_STDOUT', steps: trajectory.length }, 'stdout trajectory used');
    const otelQueryMs = Date.now() - otelStart;

    const persisted = await persistCaseResult(pool, {
      runCaseId,
      experimentId,
      status: raw.status,
      agentTrajectory: trajectory,
      agentOutput: raw.agentOutput,
      latencyMs: raw.timings.totalMs + otelQueryMs,
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
        input_tokens: 0,
        output_tokens: 0,
        total_tokens: 0,
        timings_ms: {
          sandbox_connect: raw.timings.sandboxConnectMs,
          case_exec: raw.timings.caseExecMs,
          otel_query: otelQueryMs,
          scorer_total: 0,
          total: raw.timings.totalMs + otelQueryMs,
          scorer_breakdown: {},
        },
      },
      startedAt: new Date(raw.startedAt),
      scores: null,
    });

    if (!persisted) {
      // The row left the active set (canceled by the platform or by us): report what it is now.
      const now = (await getCaseStatuses(pool, experimentId, [runCaseId])).get(runCaseId) as CaseStatus | undefined;
      log.info({ code: 'CASE_PERSIST_SKIPPED', status: now }, 'case no longer active; result kept out of run_cases');
      return { status: now ?? 'canceled', errorMessage: null, persisted: false };
    }
    if (raw.status === 'success') {
      log.info({ code: 'CASE_COMPLETED', latency_ms: raw.timings.totalMs, case_exec_ms: raw.timings.caseExecMs, docker_start_ms: raw.timings.sandboxConnectMs, otel_query_ms: otelQueryMs }, 'case completed');
    } else {
      log.error({ code: 'E_CASE_FAILED', status: raw.status, error: raw.errorMessage, logs: raw.logs.slice(0, 512) }, 'case failed');
    }
    return { status: raw.status, errorMessage: raw.errorMessage, persisted: true };
  }

  return { finalizeCase };
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
