import { createHash } from 'node:crypto';
import { pythonCanonicalJson } from '../domain/runtime-snapshot';
import { hasUrlSecret, isSecretName } from '../domain/secret-redaction';

/**
 * The content address of a case's result: everything that decides what the agent does, nothing
 * that only names the run. Two cases with the same key would produce the same trajectory (the
 * agent is deterministic, or declared itself so with `runtime_spec_json.cache: true`), so the
 * second one may reuse the first one's.
 *
 * Never part of a key: secrets (the LLM key, evaluator keys) — changing them must not change
 * results, and a key must not be a way to test guesses of them.
 */
export interface ResultCacheKeyInput {
  /** `code` | `web` | `reasoning` for a batch task; the runtime type for other agents. */
  taskType: string;
  description: string;
  /** The task's constraints (and its other parameters: tools, steps, timeout), or a case's other inputs. */
  constraints: unknown;
  /** The runtime image's id (sha256:…), not its tag: a rebuilt image is another runtime. */
  imageId: string;
  /** What else steers the runtime: commands, env without secrets, limits, user, model, endpoint. */
  runtimeSettings: unknown;
}

/**
 * The part of a runtime spec's env that goes into a key: without secret-named variables
 * (isSecretName: `OPENAI_API_KEY`, `GITHUB_TOKEN`) and without values carrying a URL with a
 * password (hasUrlSecret: `DATABASE_URL=postgres://u:p@h/db`), which are secrets whatever their
 * name. Every other variable steers the runtime and stays, as it is.
 */
export function cacheKeyEnv(env: Readonly<Record<string, string>> | undefined): Record<string, string> {
  return Object.fromEntries(
    Object.entries(env ?? {}).filter(([name, value]) => !isSecretName(name) && !hasUrlSecret(value)),
  );
}

/** Bump when what a cached result holds changes shape, so old entries are never read as new. */
const RESULT_CACHE_FORMAT = 1;

/** Unicode NFC, line breaks unified, runs of blanks collapsed, ends trimmed. */
export function normalizeDescription(text: string): string {
  return text
    .normalize('NFC')
    .replace(/\r\n?/g, '\n')
    .replace(/[ \t\f\v]+/g, ' ')
    .replace(/ *\n */g, '\n')
    .trim();
}

export function resultCacheKey(input: ResultCacheKeyInput): string {
  const canonical = pythonCanonicalJson({
    format: RESULT_CACHE_FORMAT,
    task_type: input.taskType,
    description: normalizeDescription(input.description),
    constraints: input.constraints ?? null,
    image_id: input.imageId,
    runtime_settings: input.runtimeSettings ?? null,
  });
  return createHash('sha256').update(canonical).digest('hex');
}
