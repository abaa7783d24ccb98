/**
 * The case command's record inside its own container (issue 13, worker kill -9): the command runs
 * under a wrapper that keeps its stdout, stderr, start time and exec token in CASE_RECORD_DIR and,
 * when it ends, its exit code (written to a temporary file, then renamed: a reader sees the whole
 * code or none). A worker killed mid-case leaves the container and the agent running; the retry
 * reads the record there (and waits for its end) instead of starting the agent a second time.
 *
 * The wrapper prints the kept output back on its own stdout/stderr and exits with the command's
 * code, so the normal path costs no Docker call more than a plain `sh -lc <command>`. Plain POSIX
 * sh + coreutils/busybox (mkdir, rm, mv, cat, date, grep, sleep) only.
 *
 * /tmp: writable for any user in every image we run (no read-only root filesystem is supported,
 * see ContainerHardening); one case per container, so one record per container. A directory that
 * cannot be written (an image without a writable /tmp) runs the command as before, unrecorded: it
 * still works, only a retry cannot adopt it.
 */

export const CASE_RECORD_DIR = '/tmp/.agentbench';

/** Every exec carries this env var; descendants inherit it, which is how a timeout finds and kills them all. */
export const EXEC_TOKEN_ENV = 'AGENTBENCH_EXEC_TOKEN';
/** The waiter gets the case's token under another name so it never counts itself as the case. */
const AWAIT_TOKEN_ENV = 'AGENTBENCH_AWAIT_TOKEN';

/** $0 of the wrapper (what `ps` shows); $1 is the case command. */
const WRAPPER_NAME = 'agentbench-case';

/**
 * `rm -f exit started` first: the agent-not-ready loop runs the command again in the same
 * container, and a record of the run before must not pass for this one's. `started` goes last of
 * the markers: once it is there, so is the token.
 */
const WRAPPER_SCRIPT = `
d=${CASE_RECORD_DIR}
if mkdir -p "$d" 2>/dev/null && rm -f "$d/exit" "$d/started" 2>/dev/null &&
  printf '%s\\n' "$${EXEC_TOKEN_ENV}" > "$d/token" 2>/dev/null; then
  date +%s > "$d/started.tmp" 2>/dev/null && mv -f "$d/started.tmp" "$d/started" 2>/dev/null
  # A shell tells of a child killed by a signal ("Terminated") on the stderr in effect, which a
  # plain \`sh -lc\` exec never printed: the redirections go into the subshell that execs the
  # command, and the wrapper's own report goes nowhere.
  { (exec sh -lc "$1" > "$d/stdout" 2> "$d/stderr"); code=$?; } 2>/dev/null
  printf '%s\\n' "$code" > "$d/exit.tmp" && mv -f "$d/exit.tmp" "$d/exit"
  cat "$d/stdout"
  cat "$d/stderr" >&2
  exit "$code"
fi
exec sh -lc "$1"
`;

/** The exec Cmd that runs `command` recorded (instead of `['sh', '-lc', command]`). */
export function recordedCaseCmd(command: string): string[] {
  return ['sh', '-c', WRAPPER_SCRIPT, WRAPPER_NAME, command];
}

/** Whether a process carrying the exec token `$needle` (besides this script) is alive. */
const ALIVE_FUNCTION = `
alive() {
  for p in /proc/[0-9]*; do
    [ "\${p#/proc/}" = "$$" ] && continue
    grep -q "$needle" "$p/environ" 2>/dev/null && return 0
  done
  return 1
}
`;

/**
 * What a retry finds: nothing when the command never started here; else `started=`, `token=` and
 * either `exit=` or, while the command's processes live, `alive`. The exit file is looked at again
 * after the scan: a command that ended during it is finished, not lost.
 */
export const PROBE_SCRIPT = `
d=${CASE_RECORD_DIR}
[ -f "$d/started" ] || exit 0
token=$(cat "$d/token" 2>/dev/null)
printf 'started=%s\\ntoken=%s\\n' "$(cat "$d/started")" "$token"
needle="${EXEC_TOKEN_ENV}=$token"
${ALIVE_FUNCTION}
[ ! -f "$d/exit" ] && alive && echo alive
[ -f "$d/exit" ] && printf 'exit=%s\\n' "$(cat "$d/exit")"
exit 0
`;

/** Blocks until the exit file is there (exit 0) or the command's processes are gone without it (exit 3). */
export const AWAIT_SCRIPT = `
d=${CASE_RECORD_DIR}
needle="${EXEC_TOKEN_ENV}=$${AWAIT_TOKEN_ENV}"
${ALIVE_FUNCTION}
while :; do
  [ -f "$d/exit" ] && exit 0
  if ! alive; then
    [ -f "$d/exit" ] && exit 0
    exit 3
  fi
  sleep 1
done
`;
export const AWAIT_GONE_EXIT_CODE = 3;

export function awaitEnv(token: string): Record<string, string> {
  return { [AWAIT_TOKEN_ENV]: token };
}

/** The kept output on stdout/stderr, exiting with the recorded code (255 when there is none yet). */
export const READ_SCRIPT = `
d=${CASE_RECORD_DIR}
cat "$d/stdout" 2>/dev/null
cat "$d/stderr" >&2 2>/dev/null
[ -f "$d/exit" ] && exit "$(cat "$d/exit")"
exit 255
`;

export type CaseCommandProbe =
  | { kind: 'not-started' }
  | { kind: 'running'; startedAtMs: number; token: string }
  | { kind: 'finished'; startedAtMs: number; token: string; exitCode: number }
  /** Started, no exit code, no process left: killed with its wrapper (a timeout's kill, the OOM killer). */
  | { kind: 'lost'; startedAtMs: number; token: string };

export function parseProbe(stdout: string): CaseCommandProbe {
  const fields = new Map<string, string>();
  let alive = false;
  for (const line of stdout.split('\n')) {
    if (line.trim() === 'alive') alive = true;
    const m = /^(started|token|exit)=(.*)$/.exec(line.trim());
    if (m?.[1] !== undefined) fields.set(m[1], m[2] ?? '');
  }
  const started = Number(fields.get('started'));
  const token = fields.get('token') ?? '';
  if (!fields.has('started') || !Number.isFinite(started) || token === '') return { kind: 'not-started' };
  const startedAtMs = started * 1000;
  const exit = fields.get('exit');
  if (exit !== undefined && /^\d+$/.test(exit))
    return { kind: 'finished', startedAtMs, token, exitCode: Number(exit) };
  return alive ? { kind: 'running', startedAtMs, token } : { kind: 'lost', startedAtMs, token };
}
