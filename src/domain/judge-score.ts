import { renderEvaluatorPrompt } from './template';

/**
 * The LLM-judge rules of CONTRACT §7.2/§7.3 that need no I/O: which scorers get a sentinel
 * instead of a call, the request each API style sends, where the verdict sits in the response,
 * how a verdict becomes a score, and the effective timeouts/retries. Pure.
 */

/** The score of "no verdict" (§7.2); persisted, but left out of final_score by the repository. */
export const SENTINEL_SCORE = -1;

type ScoreReasonCode =
  | 'E_SCORE_DEFAULT_RUN_CASE_FAILED'
  | 'E_SCORE_DEFAULT_EVALUATOR_CONFIG_MISSING'
  | 'E_SCORE_DEFAULT_EVALUATOR_CALL_FAILED'
  | 'E_SCORE_DEFAULT_SCORER_TIMEOUT'
  | 'E_EVALUATOR_EMPTY_CONTENT'
  | 'E_EVALUATOR_INVALID_JSON'
  | 'E_EVALUATOR_SCORE_MISSING'
  | 'E_EVALUATOR_SCORE_INVALID';

export type JudgeApiStyle = 'openai' | 'anthropic';

export interface JudgeConfig {
  baseUrl: string;
  apiKey: string;
  modelName: string;
  promptTemplate: string;
  apiStyle: JudgeApiStyle;
}

type ScoringDecision =
  | { kind: 'default'; score: number; reason: ScoreReasonCode; rawResult: { source: 'default' } }
  | { kind: 'call'; judge: JudgeConfig };

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function configText(config: Record<string, unknown>, key: string): string {
  const value = config[key];
  return typeof value === 'string' ? value.trim() : '';
}

function defaultScore(reason: ScoreReasonCode): ScoringDecision {
  return { kind: 'default', score: SENTINEL_SCORE, reason, rawResult: { source: 'default' } };
}

/** §7.3: "anthropic" (any case, trimmed) is Anthropic; anything else, or nothing, is OpenAI. */
export function judgeApiStyle(raw: unknown): JudgeApiStyle {
  return typeof raw === 'string' && raw.trim().toLowerCase() === 'anthropic' ? 'anthropic' : 'openai';
}

/** §7.2 steps 1–2: a sentinel without any HTTP call, or the judge to call. */
export function decideScoring(caseStatus: string, scorerConfig: Record<string, unknown>): ScoringDecision {
  if (caseStatus !== 'success') return defaultScore('E_SCORE_DEFAULT_RUN_CASE_FAILED');
  const judge: JudgeConfig = {
    baseUrl: configText(scorerConfig, 'base_url'),
    apiKey: configText(scorerConfig, 'api_key'),
    modelName: configText(scorerConfig, 'model_name'),
    promptTemplate: configText(scorerConfig, 'prompt_template'),
    apiStyle: judgeApiStyle(scorerConfig.api_style),
  };
  if (!judge.baseUrl || !judge.apiKey || !judge.modelName || !judge.promptTemplate) {
    return defaultScore('E_SCORE_DEFAULT_EVALUATOR_CONFIG_MISSING');
  }
  return { kind: 'call', judge };
}

/**
 * Whether scoring this case means calling at least one judge. Works on the stored (redacted)
 * scorers too: a redacted api_key is non-blank, an absent one stays blank.
 */
export function anyScorerCallsJudge(
  scorers: ReadonlyArray<{ scorer_config: Record<string, unknown> }>,
  caseStatus: string,
): boolean {
  return scorers.some((s) => decideScoring(caseStatus, s.scorer_config).kind === 'call');
}

// ---------------------------------------------------------------------------------------------
// Prompt (§7.3, §6.4 group evaluator_prompt)

/** The finished case as the judge sees it. */
export interface JudgedCaseRecord {
  status: string;
  output: unknown;
  trajectory: unknown;
  logs: string;
  latencyMs: number;
}

/** The data item the case ran on. */
export interface JudgedCaseInput {
  dataItemId: number;
  userInput: string;
  sessionJsonl: string;
  referenceTrajectory: unknown;
  referenceOutput: unknown;
  traceId: string | null;
}

export function buildEvaluatorPromptContext(caseInput: JudgedCaseInput, caseRecord: JudgedCaseRecord) {
  return {
    data_item: {
      id: caseInput.dataItemId,
      input: caseInput.userInput,
      session: caseInput.sessionJsonl,
      trajectory: caseInput.referenceTrajectory,
      output: caseInput.referenceOutput,
      trace_id: caseInput.traceId,
    },
    run: {
      output: caseRecord.output,
      trajectory: caseRecord.trajectory,
      status: caseRecord.status,
      logs: caseRecord.logs,
      latency_ms: caseRecord.latencyMs,
    },
    tools: {},
  };
}

/** Throws TemplateError (E_TEMPLATE_VARIABLE_NOT_FOUND) for an unknown placeholder. */
export function renderJudgePrompt(
  template: string,
  caseInput: JudgedCaseInput,
  caseRecord: JudgedCaseRecord,
): string {
  return renderEvaluatorPrompt(template, buildEvaluatorPromptContext(caseInput, caseRecord));
}

// ---------------------------------------------------------------------------------------------
// HTTP request and response (§7.3)

const JUDGE_SYSTEM_PROMPT = 'Return JSON only: {"score":0|0.5|1,"reason":"..."}';
const ANTHROPIC_VERSION = '2023-06-01';
const ANTHROPIC_MAX_TOKENS = 512;

export interface JudgeHttpRequest {
  /** POSTed to exactly this URL: base_url with trailing "/" removed, no path appended. */
  url: string;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

export function buildJudgeRequest(judge: JudgeConfig, prompt: string): JudgeHttpRequest {
  const url = judge.baseUrl.replace(/\/+$/, '');
  if (judge.apiStyle === 'anthropic') {
    return {
      url,
      headers: {
        'Content-Type': 'application/json',
        'x-api-key': judge.apiKey,
        Authorization: `Bearer ${judge.apiKey}`,
        'anthropic-version': ANTHROPIC_VERSION,
      },
      body: {
        model: judge.modelName,
        max_tokens: ANTHROPIC_MAX_TOKENS,
        temperature: 0,
        messages: [{ role: 'user', content: prompt }],
      },
    };
  }
  return {
    url,
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${judge.apiKey}` },
    body: {
      model: judge.modelName,
      temperature: 0,
      messages: [
        { role: 'system', content: JUDGE_SYSTEM_PROMPT },
        { role: 'user', content: prompt },
      ],
      response_format: { type: 'json_object' },
    },
  };
}

/**
 * The verdict text of a judge response: OpenAI `choices[0].message.content`, Anthropic the first
 * `content[]` item with a string `text`. Anything else (wrong shape, non-string) reads as no text.
 */
export function judgeResponseContent(style: JudgeApiStyle, body: unknown): string | null {
  if (!isPlainObject(body)) return null;
  if (style === 'anthropic') {
    const items = Array.isArray(body.content) ? (body.content as unknown[]) : [];
    for (const item of items) {
      if (isPlainObject(item) && typeof item.text === 'string') return item.text;
    }
    return null;
  }
  const first: unknown = Array.isArray(body.choices) ? body.choices[0] : undefined;
  const message = isPlainObject(first) ? first.message : undefined;
  return isPlainObject(message) && typeof message.content === 'string' ? message.content : null;
}

// ---------------------------------------------------------------------------------------------
// Verdict → score (§7.3)

interface JudgeVerdict {
  score: number;
  reason: string;
}

const INVALID_JSON_EXCERPT_CHARS = 200;
const NO_REASON = 'no reason provided';

/** Python's truthiness, because the original reads the reason with `x or default`. */
function isTruthy(value: unknown): boolean {
  if (Array.isArray(value)) return value.length > 0;
  if (isPlainObject(value)) return Object.keys(value).length > 0;
  return Boolean(value);
}

/** Python `float(x)` on what json.loads yields: numbers, and strings that spell a number. */
function numericScore(value: unknown): number | null {
  if (typeof value === 'number') return value;
  if (typeof value === 'string' && value.trim() !== '') {
    const n = Number(value.trim());
    return Number.isNaN(n) ? null : n;
  }
  return null;
}

/** Bucketing: exactly 0, 0.5 and 1 are kept; otherwise ≥ 0.9 → 1, ≥ 0.6 → 0.5, else 0. */
export function bucketScore(n: number): number {
  if (n === 0 || n === 0.5 || n === 1) return n;
  if (n >= 0.9) return 1;
  if (n >= 0.6) return 0.5;
  return 0;
}

/**
 * The judge's text → score and reason. Every failure here is still a verdict (score −1 with a
 * reason code), never an exception: the call itself succeeded (§7.3, raw source `llm`).
 */
export function extractJudgeVerdict(content: string | null): JudgeVerdict {
  if (content === null || content.trim() === '') {
    return { score: SENTINEL_SCORE, reason: 'E_EVALUATOR_EMPTY_CONTENT' };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(content);
  } catch {
    return {
      score: SENTINEL_SCORE,
      reason: `E_EVALUATOR_INVALID_JSON: ${content.slice(0, INVALID_JSON_EXCERPT_CHARS)}`,
    };
  }
  // A JSON value that is not an object (a bare number, a list) carries neither score nor reason.
  const verdict = isPlainObject(parsed) ? parsed : {};
  const rawReason = verdict.reason;
  const reason = isTruthy(rawReason)
    ? typeof rawReason === 'string'
      ? rawReason
      : JSON.stringify(rawReason)
    : NO_REASON;
  const rawScore = verdict.score;
  if (rawScore === undefined || rawScore === null) {
    return { score: SENTINEL_SCORE, reason: `E_EVALUATOR_SCORE_MISSING: ${reason}` };
  }
  const n = numericScore(rawScore);
  if (n === null) return { score: SENTINEL_SCORE, reason: `E_EVALUATOR_SCORE_INVALID: ${reason}` };
  return { score: bucketScore(n), reason };
}

// ---------------------------------------------------------------------------------------------
// Effective call settings (§7.3, §9)

/** The evaluator env settings of §9 (Config['evaluator'] fits). Seconds; 0 means zero. */
export interface EvaluatorSettings {
  connectTimeoutSeconds: number;
  readTimeoutSeconds: number;
  maxRetries: number;
  retryBackoffSeconds: number;
  scorerHardTimeoutSeconds: number;
}

export interface JudgeCallSettings {
  /** 0 = no connect timeout (the scorer hard timeout still bounds the call). */
  connectTimeoutSeconds: number;
  /** Inactivity limit while waiting for headers and between body chunks; 0 = none. */
  readTimeoutSeconds: number;
  maxRetries: number;
  retryBackoffSeconds: number;
}

function parseNonNegative(value: unknown, integer: boolean): number | null {
  let n: number;
  if (typeof value === 'number') n = value;
  else if (typeof value === 'string' && value.trim() !== '') n = Number(value.trim());
  else return null;
  if (!Number.isFinite(n) || n < 0) return null;
  if (integer && !Number.isInteger(n)) return null;
  return n;
}

/**
 * `scorer_config.<key>` when non-blank and parseable, else the env value. Unlike the original
 * (`x or default`, §13.15) an env value of 0 is taken as 0: no retries, no backoff.
 */
export function resolveJudgeCallSettings(
  scorerConfig: Record<string, unknown>,
  env: EvaluatorSettings,
): JudgeCallSettings {
  return {
    connectTimeoutSeconds:
      parseNonNegative(scorerConfig.connect_timeout_seconds, false) ?? env.connectTimeoutSeconds,
    readTimeoutSeconds: parseNonNegative(scorerConfig.read_timeout_seconds, false) ?? env.readTimeoutSeconds,
    maxRetries: parseNonNegative(scorerConfig.max_retries, true) ?? env.maxRetries,
    retryBackoffSeconds:
      parseNonNegative(scorerConfig.retry_backoff_seconds, false) ?? env.retryBackoffSeconds,
  };
}

/** §7.3: attempts = max(1, max_retries + 1). */
export function judgeAttempts(maxRetries: number): number {
  return Math.max(1, Math.floor(maxRetries) + 1);
}

/** §7.3: the pause before attempt n+1 after attempt n failed (n from 1). */
export function judgeRetryDelayMs(retryBackoffSeconds: number, failedAttempt: number): number {
  return Math.max(0, retryBackoffSeconds) * 2 ** (failedAttempt - 1) * 1000;
}

/** Statuses retried like timeouts and connection errors (§7.3). */
export const RETRYABLE_JUDGE_STATUSES: ReadonlySet<number> = new Set([
  408, 409, 425, 429, 500, 502, 503, 504,
]);
