import {
  buildJudgeRequest,
  decideScoring,
  extractJudgeVerdict,
  judgeResponseContent,
  renderJudgePrompt,
  resolveJudgeCallSettings,
  SENTINEL_SCORE,
  type EvaluatorSettings,
  type JudgedCaseInput,
  type JudgedCaseRecord,
} from '../domain/judge-score';
import { redactSecrets } from '../domain/secret-redaction';
import type { ScorerDefinition } from '../domain/scoring-input';
import type { Logger } from '../logger';
import { ScorerHardTimeout } from './errors';
import { callLlmJudge } from './llm-judge-client';

/**
 * Scores one finished case with every scorer of its experiment (CONTRACT §7.1–§7.3), all scorers
 * concurrently. A scorer never fails the case: every outcome is a score, −1 with a reason code
 * when there is no verdict. Only cancellation (the caller's signal) rejects.
 */

export interface ScorerResult {
  scorerKey: string;
  /** evaluators.id; 0 when the scorer has none. */
  evaluatorId: number;
  score: number;
  reason: string;
  rawResult: object;
  /** Wall time of this scorer, timeouts included (usage_json.timings_ms.scorer_breakdown). */
  durationMs: number;
}

export interface ScoreCaseParams {
  caseRecord: JudgedCaseRecord;
  caseInput: JudgedCaseInput;
  scorers: ScorerDefinition[];
  settings: EvaluatorSettings;
  log: Logger;
  signal?: AbortSignal;
  /** Called when a scorer finishes, before each retry and every few seconds meanwhile (heartbeats). */
  onProgress?: () => void;
}

/** §2.4: with no scorers the original scored with one implicit, unconfigured `task_success`. */
const IMPLICIT_SCORER: ScorerDefinition = {
  id: 0,
  scorer_key: 'task_success',
  name: 'task_success',
  scorer_config: {},
};
const PROGRESS_INTERVAL_MS = 5_000;

function errorName(err: unknown): string {
  return err instanceof Error ? err.name : typeof err;
}

function errorText(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

/** Rejects with the signal's reason once it aborts, so a call that ignores the signal cannot outlive it. */
function abortion(signal: AbortSignal): { promise: Promise<never>; dispose: () => void } {
  let onAbort = () => {};
  const promise = new Promise<never>((_resolve, reject) => {
    onAbort = () => reject(signal.reason as unknown);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
  return { promise, dispose: () => signal.removeEventListener('abort', onAbort) };
}

export async function scoreCase(p: ScoreCaseParams): Promise<ScorerResult[]> {
  p.signal?.throwIfAborted();
  const scorers = p.scorers.length > 0 ? p.scorers : [IMPLICIT_SCORER];
  const ticker = p.onProgress ? setInterval(p.onProgress, PROGRESS_INTERVAL_MS) : undefined;
  try {
    return await Promise.all(
      scorers.map(async (scorer) => {
        const result = await runScorer(p, scorer);
        p.onProgress?.();
        return result;
      }),
    );
  } finally {
    clearInterval(ticker);
  }
}

async function runScorer(p: ScoreCaseParams, scorer: ScorerDefinition): Promise<ScorerResult> {
  const started = performance.now();
  const log = p.log.child({ scorer_key: scorer.scorer_key, evaluator_id: scorer.id });
  const finish = (score: number, reason: string, rawResult: object): ScorerResult => ({
    scorerKey: scorer.scorer_key,
    evaluatorId: scorer.id,
    score,
    reason,
    rawResult,
    durationMs: Math.round(performance.now() - started),
  });

  const decision = decideScoring(p.caseRecord.status, scorer.scorer_config);
  if (decision.kind === 'default') return finish(decision.score, decision.reason, decision.rawResult);
  const { judge } = decision;

  // §7.1: min 1 s. Unlike the original, the timed-out call is aborted rather than left running.
  const hardTimeoutSeconds = Math.max(1, p.settings.scorerHardTimeoutSeconds);
  const deadline = new AbortController();
  const timer = setTimeout(
    () => deadline.abort(new ScorerHardTimeout(`scorer exceeded ${hardTimeoutSeconds}s`)),
    hardTimeoutSeconds * 1000,
  );
  const signal = p.signal ? AbortSignal.any([p.signal, deadline.signal]) : deadline.signal;
  const aborted = abortion(signal);

  try {
    const call = (async () => {
      const prompt = renderJudgePrompt(judge.promptTemplate, p.caseInput, p.caseRecord);
      return callLlmJudge(buildJudgeRequest(judge, prompt), {
        ...resolveJudgeCallSettings(scorer.scorer_config, p.settings),
        signal,
        onRetry: ({ failedAttempt, delayMs, error }) => {
          log.info(
            {
              code: 'EVALUATOR_CALL_RETRY',
              attempt: failedAttempt,
              retry_in_ms: delayMs,
              error: errorText(error),
            },
            'evaluator call failed; retrying',
          );
          p.onProgress?.();
        },
      });
    })();
    call.catch(() => {}); // the race below may settle first; its rejection is handled there
    const response = await Promise.race([call, aborted.promise]);
    const verdict = extractJudgeVerdict(judgeResponseContent(judge.apiStyle, response));
    return finish(verdict.score, verdict.reason, { source: 'llm', response: redactSecrets(response) });
  } catch (err) {
    if (p.signal?.aborted) throw p.signal.reason as unknown;
    if (deadline.signal.aborted) {
      log.warn({ code: 'E_SCORER_TIMEOUT', timeout_seconds: hardTimeoutSeconds }, 'scorer hard timeout');
      return finish(SENTINEL_SCORE, 'E_SCORE_DEFAULT_SCORER_TIMEOUT', { source: 'default', timeout: true });
    }
    log.warn({ code: 'E_EVALUATOR_CALL_FAILED', error: errorText(err) }, 'evaluator call failed');
    return finish(SENTINEL_SCORE, `E_SCORE_DEFAULT_EVALUATOR_CALL_FAILED: ${errorName(err)}`, {
      source: 'default',
    });
  } finally {
    clearTimeout(timer);
    aborted.dispose();
  }
}
