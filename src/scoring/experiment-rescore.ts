import type pg from 'pg';
import type { EvaluatorSettings } from '../domain/judge-score';
import { judgedCaseInput, scorerFromEvaluator, type ScorerDefinition } from '../domain/scoring-input';
import { listExperimentEvaluators } from '../db/evaluator-repository';
import { experimentExists } from '../db/experiment-repository';
import { persistCaseScores } from '../db/run-case-repository';
import { getFinalScores, listLatestStoredCases, type StoredCase } from '../db/stored-case-repository';
import { Semaphore } from '../docker/semaphore';
import type { Logger } from '../logger';
import { scoreCase, type ScorerResult } from './case-scorer';
import { RescoreTargetError } from './errors';

/**
 * Scores the latest finished cases of an experiment again (`benchctl rescore`), from what run_cases
 * already stores, with the experiment's evaluators as they are now (prompt, model, key). No
 * container runs. With `scorer`, only that evaluator is asked and only its score rows are replaced.
 */

/** Cases that ran to the end; active ones are still being scored by their run, canceled ones never were. */
export const RESCORABLE_STATUSES: readonly string[] = ['success', 'failed', 'timeout'];

interface RescoreDeps {
  pool: pg.Pool;
  log: Logger;
  evaluator: EvaluatorSettings;
  /** CONSUMER_SCORER_CONCURRENT_CASES: cases being judged at once. */
  concurrentCases: number;
}

interface RescoredCase {
  runCaseId: number;
  status: string;
  results: ScorerResult[];
  finalScore: number | null;
}

interface ExperimentRescore {
  /** The scorers asked, in the experiment's order. */
  scorerKeys: string[];
  /** In run case id order. */
  cases: RescoredCase[];
  /** Latest cases left alone because they had not finished (RESCORABLE_STATUSES). */
  skipped: number;
}

export async function rescoreExperiment(
  deps: RescoreDeps,
  experimentId: number,
  opts: { scorer?: string } = {},
): Promise<ExperimentRescore> {
  const { pool } = deps;
  if (!(await experimentExists(pool, experimentId))) {
    throw new RescoreTargetError(`experiment ${experimentId} not found`);
  }
  let scorers = (await listExperimentEvaluators(pool, experimentId)).map(scorerFromEvaluator);
  if (opts.scorer !== undefined) {
    const known = scorers.map((s) => s.scorer_key);
    scorers = scorers.filter((s) => s.scorer_key === opts.scorer);
    if (scorers.length === 0) {
      throw new RescoreTargetError(
        `experiment ${experimentId} has no evaluator "${opts.scorer}" (it has: ${known.join(', ') || 'none'})`,
      );
    }
  }

  const latest = await listLatestStoredCases(pool, experimentId);
  const rescorable = latest.filter((c) => RESCORABLE_STATUSES.includes(c.status));
  const slots = new Semaphore(deps.concurrentCases);
  const results = await Promise.all(
    rescorable.map((c) =>
      slots.run(() => rescoreCase(deps, experimentId, c, scorers, opts.scorer !== undefined)),
    ),
  );
  const finals = await getFinalScores(
    pool,
    rescorable.map((c) => c.id),
  );
  return {
    // With no scorers linked, scoreCase judges with the implicit one (§2.4): its key is in the results.
    scorerKeys: results[0]?.map((r) => r.scorerKey) ?? scorers.map((s) => s.scorer_key),
    cases: rescorable.map((c, i) => ({
      runCaseId: c.id,
      status: c.status,
      results: results[i] ?? [],
      finalScore: finals.get(c.id) ?? null,
    })),
    skipped: latest.length - rescorable.length,
  };
}

async function rescoreCase(
  deps: RescoreDeps,
  experimentId: number,
  stored: StoredCase,
  scorers: ScorerDefinition[],
  onlySomeScorers: boolean,
): Promise<ScorerResult[]> {
  const results = await scoreCase({
    caseRecord: {
      status: stored.status,
      output: stored.agent_output,
      trajectory: stored.agent_trajectory ?? [],
      logs: stored.logs ?? '',
      latencyMs: stored.latency_ms ?? 0,
    },
    caseInput: judgedCaseInput(stored),
    scorers,
    settings: deps.evaluator,
    log: deps.log.child({ experiment_id: experimentId, run_case_id: stored.id }),
  });
  await persistCaseScores(deps.pool, {
    runCaseId: stored.id,
    experimentId,
    scores: results,
    onlyTheseScorers: onlySomeScorers,
  });
  return results;
}
