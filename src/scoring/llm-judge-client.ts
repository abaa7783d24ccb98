import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import {
  judgeAttempts,
  judgeRetryDelayMs,
  type JudgeCallSettings,
  type JudgeHttpRequest,
} from '../domain/judge-score';
import { errorText } from '../domain/errors';
import { isSecretName, REDACTED } from '../domain/secret-redaction';
import {
  ConnectionError,
  ConnectTimeout,
  HTTPError,
  InvalidURL,
  JSONDecodeError,
  JudgeCallError,
  ReadTimeout,
} from './errors';

/**
 * The LLM judge's HTTP call (CONTRACT §7.3): a JSON POST with separate connect and read timeouts,
 * retried with exponential backoff on timeouts, connection errors and the retryable statuses.
 * Failures are the JudgeCallError classes of ./errors.
 */
export interface JudgeCallOptions extends JudgeCallSettings {
  /** Aborts the attempt in flight and any backoff pause; the call then rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Called before each backoff pause, e.g. to log or heartbeat. */
  onRetry?: (info: { failedAttempt: number; delayMs: number; error: JudgeCallError }) => void;
}

const ERROR_BODY_EXCERPT_CHARS = 200;

const CONNECTION_ERROR_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'UND_ERR_SOCKET',
]);

/** Seconds → undici milliseconds, where 0 disables the timeout. */
function timeoutMs(seconds: number): number {
  return seconds > 0 ? Math.max(1, Math.round(seconds * 1000)) : 0;
}

function errorCode(err: unknown): string | undefined {
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' ? code : undefined;
}

/** undici's and the socket's errors → the retry classes; anything else is returned unchanged. */
function classify(err: unknown): unknown {
  const message = errorText(err);
  const code = errorCode(err);
  if (code === 'UND_ERR_CONNECT_TIMEOUT') return new ConnectTimeout(message, { cause: err });
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT')
    return new ReadTimeout(message, { cause: err });
  if (code !== undefined && CONNECTION_ERROR_CODES.has(code))
    return new ConnectionError(message, { cause: err });
  return err;
}

function checkedUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new InvalidURL('base_url is not a valid URL');
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new InvalidURL(`base_url scheme ${parsed.protocol} is not http(s)`);
  }
  return url;
}

/** Error bodies may quote the credential back (some providers echo it); never let it travel on. */
function excerptWithoutSecrets(text: string, headers: Record<string, string>): string {
  let excerpt = text.slice(0, ERROR_BODY_EXCERPT_CHARS);
  // Every secret-named header (Authorization, x-api-key, and whatever a judge style adds later).
  for (const [name, value] of Object.entries(headers)) {
    if (!isSecretName(name)) continue;
    const secret = value.replace(/^Bearer\s+/i, '');
    if (secret) excerpt = excerpt.split(secret).join(REDACTED);
  }
  return excerpt;
}

async function attemptOnce(
  url: string,
  req: JudgeHttpRequest,
  dispatcher: Agent,
  options: JudgeCallOptions,
): Promise<unknown> {
  const readMs = timeoutMs(options.readTimeoutSeconds);
  let text: string;
  let status: number;
  try {
    const res = await request(url, {
      method: 'POST',
      headers: req.headers,
      body: JSON.stringify(req.body),
      dispatcher,
      headersTimeout: readMs,
      bodyTimeout: readMs,
      signal: options.signal,
    });
    status = res.statusCode;
    text = await res.body.text();
  } catch (err) {
    throw classify(err);
  }
  if (status < 200 || status >= 300) throw new HTTPError(status, excerptWithoutSecrets(text, req.headers));
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new JSONDecodeError(`response body is not JSON (HTTP ${status})`, { cause: err });
  }
}

/**
 * POSTs the judge request and returns its parsed JSON body. Attempts = max(1, max_retries + 1);
 * the pause after failed attempt n is retry_backoff_seconds × 2^(n−1).
 */
export async function callLlmJudge(req: JudgeHttpRequest, options: JudgeCallOptions): Promise<unknown> {
  const { signal } = options;
  const url = checkedUrl(req.url);
  const attempts = judgeAttempts(options.maxRetries);
  const dispatcher = new Agent({ connect: { timeout: timeoutMs(options.connectTimeoutSeconds) } });
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        signal?.throwIfAborted();
        return await attemptOnce(url, req, dispatcher, options);
      } catch (err) {
        if (signal?.aborted) throw signal.reason as unknown;
        if (!(err instanceof JudgeCallError) || !err.retryable || attempt >= attempts) throw err;
        const delayMs = judgeRetryDelayMs(options.retryBackoffSeconds, attempt);
        options.onRetry?.({ failedAttempt: attempt, delayMs, error: err });
        await sleep(delayMs, undefined, { signal }).catch((sleepErr: unknown) => {
          throw signal?.aborted ? (signal.reason as unknown) : sleepErr;
        });
      }
    }
  } finally {
    // Also tears down a request still hanging after an abort, so the judge sees the connection close.
    await dispatcher.destroy();
  }
}
