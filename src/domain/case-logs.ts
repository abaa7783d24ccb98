/**
 * run_cases.logs, exit code, status and error_message of one executed case (CONTRACT §6.5/§6.6).
 * Pure.
 */

export const CONTAINER_LOG_TAIL_CHARS = 8000;

function isLowSurrogate(code: number): boolean {
  return code >= 0xdc00 && code <= 0xdfff;
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

/** The last `n` characters counted in code points, as Python's `s[-n:]` does; never splits a pair. */
export function tailChars(s: string, n: number): string {
  if (n <= 0) return '';
  let start = s.length;
  for (let count = 0; start > 0 && count < n; count++) {
    const pair =
      start >= 2 && isLowSurrogate(s.charCodeAt(start - 1)) && isHighSurrogate(s.charCodeAt(start - 2));
    start -= pair ? 2 : 1;
  }
  return s.slice(start);
}

interface CaseLogParts {
  execStdout: string;
  execStderr: string;
  /** Output of after_exec_command; null when none ran. */
  afterLogs: string | null;
  /** The `logs` field the agent printed on stdout (§4.5), which replaces the exec logs. */
  logsOverride: string | null;
  /** `docker logs` of the container (stdout and stderr). */
  containerLogs: string;
  /** Last line, e.g. `[inspect] eval_id=… sample_id=…` or our workflow reference. */
  footer: string;
}

export function assembleCaseLogs(p: CaseLogParts): string {
  const execLogs = `${p.execStdout}\n${p.execStderr}`.trim();
  let logs =
    p.logsOverride ?? (p.afterLogs !== null ? `${execLogs}\n\n[after-exec]\n${p.afterLogs}` : execLogs);
  // The original strips `docker logs` output before tailing and skips it when nothing is left.
  const container = p.containerLogs.trim();
  if (container) logs += `\n\n[container]\n${tailChars(container, CONTAINER_LOG_TAIL_CHARS)}`;
  return `${logs}\n${p.footer}`.trim();
}

interface CaseOutcome {
  status: 'success' | 'failed';
  exitCode: number;
  errorMessage: string | null;
}

/** §6.5 final exit code and §6.6 status/error; `afterExitCode` is null when no after-command ran. */
export function caseOutcome(p: { caseExitCode: number; afterExitCode: number | null }): CaseOutcome {
  if (p.caseExitCode !== 0) {
    return {
      status: 'failed',
      exitCode: p.caseExitCode,
      errorMessage: `E_AGENT_EXIT_NON_ZERO: exit code ${p.caseExitCode}`,
    };
  }
  if (p.afterExitCode !== null && p.afterExitCode !== 0) {
    return {
      status: 'failed',
      exitCode: p.afterExitCode,
      errorMessage: `E_AFTER_EXEC_NON_ZERO: exit code ${p.afterExitCode}`,
    };
  }
  return { status: 'success', exitCode: 0, errorMessage: null };
}
