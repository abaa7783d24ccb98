/**
 * Token usage of a case (CONTRACT §3.8, §13.15: the original always wrote 0 and never filled
 * run_cases.input_tokens/output_tokens). The agent's own stdout `usage` object wins; token counts
 * summed from its OTel spans are the fallback. Pure.
 */

interface TokenCounts {
  inputTokens: number;
  outputTokens: number;
}

type UsageSource = 'agent_stdout' | 'otel';

interface CaseUsage {
  /** run_cases.input_tokens; null (column left NULL) when no source reported tokens. */
  inputTokens: number | null;
  outputTokens: number | null;
  /** The token keys of usage_json (§3.8), merged into it by the final persist. */
  usageJson: {
    input_tokens: number;
    output_tokens: number;
    total_tokens: number;
    token_source?: UsageSource;
  };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A token count as agents print it: a non-negative integer, or a string of digits. */
function count(value: unknown): number | null {
  const n =
    typeof value === 'number'
      ? value
      : typeof value === 'string' && /^\d+$/.test(value.trim())
        ? Number(value)
        : NaN;
  return Number.isSafeInteger(n) && n >= 0 ? n : null;
}

function sum(values: Array<number | null>): number | null {
  const known = values.filter((v): v is number => v !== null);
  return known.length === 0 ? null : known.reduce((a, b) => a + b, 0);
}

/**
 * OpenAI `{prompt_tokens, completion_tokens, total_tokens}`, or Anthropic (and OpenAI Responses)
 * `{input_tokens, output_tokens}`. Anthropic reports prompt-cache tokens apart from input_tokens;
 * they are added to the input, as OpenAI's prompt_tokens already includes cached tokens.
 */
function stdoutTokens(usage: unknown): (TokenCounts & { total: number | null }) | null {
  if (!isPlainObject(usage)) return null;
  const input =
    count(usage.prompt_tokens) ??
    sum([
      count(usage.input_tokens),
      count(usage.cache_creation_input_tokens),
      count(usage.cache_read_input_tokens),
    ]);
  const output = count(usage.completion_tokens) ?? count(usage.output_tokens);
  if (input === null && output === null) return null;
  return { inputTokens: input ?? 0, outputTokens: output ?? 0, total: count(usage.total_tokens) };
}

function reported(
  inputTokens: number,
  outputTokens: number,
  total: number | null,
  source: UsageSource,
): CaseUsage {
  return {
    inputTokens,
    outputTokens,
    usageJson: {
      input_tokens: inputTokens,
      output_tokens: outputTokens,
      total_tokens: total ?? inputTokens + outputTokens,
      token_source: source,
    },
  };
}

export function extractUsage(stdoutUsage: unknown, otelUsage: TokenCounts | null): CaseUsage {
  const fromStdout = stdoutTokens(stdoutUsage);
  if (fromStdout)
    return reported(fromStdout.inputTokens, fromStdout.outputTokens, fromStdout.total, 'agent_stdout');
  const otelInput = otelUsage ? count(otelUsage.inputTokens) : null;
  const otelOutput = otelUsage ? count(otelUsage.outputTokens) : null;
  if (otelInput !== null || otelOutput !== null)
    return reported(otelInput ?? 0, otelOutput ?? 0, null, 'otel');
  return {
    inputTokens: null,
    outputTokens: null,
    usageJson: { input_tokens: 0, output_tokens: 0, total_tokens: 0 },
  };
}
