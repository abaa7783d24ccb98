import { Context } from '@temporalio/activity';
import type { CaseRef, CaseScoresSummary } from '../src/domain/activity-contract';
import type { EvaluatorSettings } from '../src/domain/judge-score';
import { judgedCaseInput } from '../src/domain/scoring-input';
import { loadCasePhases, saveCaseScores } from '../src/db/case-result-repository';
import { transitionCaseStatus } from '../src/db/run-case-repository';
import { scoreCase as runScorers } from '../src/scoring/case-scorer';
import { loadEvaluatorApiKeys, withEvaluatorApiKeys } from '../src/scoring/evaluator-secrets';
import { caseActivity } from './activity-boundary';
import type { DatabaseDeps, RunRequests } from './activity-deps';

export interface CaseScoringDeps extends DatabaseDeps {
  runRequests: RunRequests;
  /** EVALUATOR_* timeouts and retries of the judge calls. */
  evaluator: EvaluatorSettings;
}

/**
 * The scoring phase (CONTRACT §7): every scorer of the run judges the finished case. Its own
 * activity with its own retries and heartbeats; its scores are stored before it returns, so the
 * final persist and any retry reuse them. API keys are read from the platform's evaluators rows at
 * this moment only — they are never in a workflow payload or one of our rows.
 */
export function createCaseScoring(deps: CaseScoringDeps) {
  async function scoreCase(ref: CaseRef): Promise<CaseScoresSummary> {
    const { workflowId, experimentId, runCaseId } = ref;
    const ctx = Context.current();
    const phases = await loadCasePhases(deps.pool, workflowId, runCaseId);
    if (!phases) throw new Error(`no container-phase result for case ${runCaseId} of ${workflowId}`);
    const summary = (s: { scorerKey: string; score: number }[]) => ({
      scores: s.map(({ scorerKey, score }) => ({ scorerKey, score })),
    });
    if (phases.scores) return summary(phases.scores.scores);

    const run = await deps.runRequests.get(workflowId);
    const caseInput = await deps.runRequests.caseInput(workflowId, runCaseId);
    await transitionCaseStatus(deps.pool, { experimentId, runCaseId, to: 'scoring' });
    const keys = await loadEvaluatorApiKeys(
      deps.pool,
      run.request.scorers.map((s) => s.id).filter((id) => id > 0),
    );
    const raw = phases.result;
    const results = await runScorers({
      caseRecord: {
        status: raw.status,
        output: raw.agentOutput,
        trajectory: phases.trajectory?.steps ?? [],
        logs: raw.logs,
        latencyMs: raw.timings.totalMs,
      },
      caseInput: judgedCaseInput(caseInput),
      scorers: withEvaluatorApiKeys(run.request.scorers, keys),
      settings: deps.evaluator,
      log: deps.log.child({ workflow_id: workflowId, run_case_id: runCaseId }),
      signal: ctx.cancellationSignal,
      onProgress: () => ctx.heartbeat(),
    });
    const scores = results.map(({ scorerKey, evaluatorId, score, reason, rawResult }) => ({
      scorerKey,
      evaluatorId,
      score,
      reason,
      rawResult,
    }));
    await saveCaseScores(deps.pool, workflowId, runCaseId, {
      scores,
      durationsMs: Object.fromEntries(results.map((r) => [r.scorerKey, r.durationMs])),
    });
    // §3.2: the last scorer of a case moves it back to `trajectory` (score_done).
    await transitionCaseStatus(deps.pool, { experimentId, runCaseId, to: 'trajectory' });
    return summary(scores);
  }
  return { scoreCase: caseActivity(scoreCase) };
}
