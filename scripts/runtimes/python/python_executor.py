"""Runs untrusted Python with limits and reports a typed result.

Limits, inside the (already hardened, memory/pids-capped) container: address space (RLIMIT_AS, so
a huge allocation is a MemoryError, not an OOM kill of the whole container), CPU seconds
(RLIMIT_CPU), file size, open files, and wall-clock time; on the deadline the code's whole process
group is killed (a fork bomb's children included). Error types: `compile_error` (never executed),
`runtime_error` (non-zero exit or a signal), `timeout` (wall clock or CPU limit).

CLI (for the reasoning runtime): JSON `{"code", "timeout_s"?, "memory_mb"?}` on stdin, the result
as one JSON object on stdout.
"""

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MEMORY_MB = 256
OUTPUT_LIMIT_BYTES = 64 * 1024
MAX_FILE_BYTES = 16 * 1024 * 1024


def _limits(memory_mb, cpu_seconds):
    def apply():
        os.setsid()  # its own process group, so a timeout can kill everything it started
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 1024 * 1024,) * 2)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES,) * 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def _signal_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _kill_group(proc):
    """Kills the code's process group until it is empty (a fork bomb keeps adding members until the
    signal reaches them all). Killed members stay in the group as zombies until reaped: our child
    by us, the others by the container's init."""
    _signal_group(proc.pid)
    proc.wait()
    for _ in range(100):
        if not _signal_group(proc.pid):
            return
        time.sleep(0.01)


def _decode(data):
    text = data.decode("utf-8", "replace")
    if len(data) >= OUTPUT_LIMIT_BYTES:
        text += "\n[output truncated]"
    return text


def _last_error_line(stderr):
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def execute(code, timeout_s=DEFAULT_TIMEOUT_S, memory_mb=DEFAULT_MEMORY_MB):
    started = time.time()
    result = {"success": False, "stdout": "", "stderr": "", "exit_code": None,
              "error_type": None, "error_message": None}
    try:
        compile(code, "<task>", "exec")
    except (SyntaxError, ValueError) as err:
        result.update(error_type="compile_error", error_message=f"{type(err).__name__}: {err}")
        result["duration"] = round(time.time() - started, 6)
        return result

    workdir = tempfile.mkdtemp(prefix="task-")
    path = os.path.join(workdir, "main.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(code)
    cpu_seconds = max(1, int(timeout_s) + 1)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-u", path], cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            preexec_fn=_limits(memory_mb, cpu_seconds), env={"PATH": "/usr/bin:/bin", "HOME": workdir},
        )
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        # Whatever it left behind dies with the group, also after a normal exit.
        _kill_group(proc)
        out.seek(0)
        err.seek(0)
        result["stdout"] = _decode(out.read(OUTPUT_LIMIT_BYTES))
        result["stderr"] = _decode(err.read(OUTPUT_LIMIT_BYTES))
    code_ = proc.returncode
    result["exit_code"] = code_
    if timed_out or code_ == -signal.SIGXCPU:
        reason = "CPU time" if code_ == -signal.SIGXCPU and not timed_out else "wall-clock time"
        result.update(error_type="timeout", error_message=f"exceeded the {timeout_s:g}s {reason} limit and was killed")
    elif code_ == 0:
        result["success"] = True
    elif code_ < 0:
        name = signal.Signals(-code_).name if -code_ in signal.Signals._value2member_map_ else str(-code_)
        result.update(error_type="runtime_error", error_message=f"killed by {name}")
    else:
        result.update(error_type="runtime_error",
                      error_message=_last_error_line(result["stderr"]) or f"exited with code {code_}")
    result["duration"] = round(time.time() - started, 6)
    return result


if __name__ == "__main__":
    request = json.load(sys.stdin)
    print(json.dumps(execute(
        str(request.get("code", "")),
        float(request.get("timeout_s") or DEFAULT_TIMEOUT_S),
        int(request.get("memory_mb") or DEFAULT_MEMORY_MB),
    )))
