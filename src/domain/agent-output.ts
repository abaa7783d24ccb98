/**
 * Reads the agent's answer out of the case command's stdout/stderr (CONTRACT §4.5). Pure.
 */

interface AgentStdout {
  /** Becomes run_cases.agent_output. */
  output: unknown;
  /** Replaces the exec logs in run_cases.logs when the agent printed a truthy `logs` (§6.5). */
  logsOverride: string | null;
  /** Legacy `trajectory` array, for the stdout fallback when OTel found nothing. */
  stdoutTrajectory: unknown[] | null;
  usage: unknown | null;
}

type JsonObject = Record<string, unknown>;

function isPlainObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Python's truthiness: the original tests `parsed.get("logs")`, so "", 0, [] and {} do not count. */
function isTruthy(value: unknown): boolean {
  if (Array.isArray(value)) return value.length > 0;
  if (isPlainObject(value)) return Object.keys(value).length > 0;
  return Boolean(value);
}

function parseObject(text: string): JsonObject | null {
  try {
    const value: unknown = JSON.parse(text);
    return isPlainObject(value) ? value : null;
  } catch {
    return null;
  }
}

// The line breaks of Python's str.splitlines(), which the original scans with; \x1c-\x1e are
// among them, hence the control characters.
// eslint-disable-next-line no-control-regex
const LINE_BREAK = /\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/;

function findJsonObject(text: string): JsonObject | null {
  const lines = text.split(LINE_BREAK);
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = (lines[i] ?? '').trim();
    if (!line.startsWith('{') && !line.startsWith('[')) continue;
    const found = parseObject(line);
    if (found) return found;
  }
  return parseObject(text);
}

/** OpenAI chat-completions shape: `choices[0].message.content`. */
function chatCompletionContent(obj: JsonObject): { found: true; content: unknown } | { found: false } {
  const choices = obj.choices;
  const first: unknown = Array.isArray(choices) ? choices[0] : undefined;
  const message = isPlainObject(first) ? first.message : undefined;
  if (isPlainObject(message) && message.content !== undefined && message.content !== null) {
    return { found: true, content: message.content };
  }
  return { found: false };
}

export function parseAgentStdout(stdout: string, stderr: string): AgentStdout {
  const obj = findJsonObject(`${stdout}\n${stderr}`.trim());
  if (!obj)
    return { output: { raw_stdout: stdout }, logsOverride: null, stdoutTrajectory: null, usage: null };

  let output: unknown = obj;
  if (Object.hasOwn(obj, 'output')) {
    output = obj.output;
  } else {
    const chat = chatCompletionContent(obj);
    if (chat.found) output = chat.content;
  }
  const logs = obj.logs;
  return {
    output,
    logsOverride: isTruthy(logs) ? (typeof logs === 'string' ? logs : JSON.stringify(logs)) : null,
    stdoutTrajectory: Array.isArray(obj.trajectory) ? obj.trajectory : null,
    usage: isPlainObject(obj.usage) ? obj.usage : null,
  };
}
