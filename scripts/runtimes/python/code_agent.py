"""The code runtime: runs the task's Python (`constraints.code`, else code the configured LLM writes
for the description) with limits, one `code_execution` step per run."""

import re
import sys
import time

import python_executor
import task_runtime as rt

RUNTIME_ID = "agentbench-code/1"
FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.S)


def code_from_llm(recorder, task):
    started = time.time()
    prompt = [
        {"role": "system", "content": "Write one self-contained Python 3 program that solves the task and "
                                      "prints its answer. Reply with the program in a ```python block only."},
        {"role": "user", "content": task.get("description", "")},
    ]
    try:
        message, usage = rt.chat(prompt)
    except rt.LlmError as err:
        recorder.record("tool_call", {"tool": "llm", "purpose": "write_code"}, started, "", False,
                        err.error_type, str(err), tool_name="llm")
        return None, err
    content = message.get("content") or ""
    match = FENCE.search(content)
    code = match.group(1) if match else content
    ok = bool(code.strip())
    recorder.record("tool_call", {"tool": "llm", "purpose": "write_code"}, started, content, ok,
                    None if ok else "invalid_llm_response", None if ok else "the model returned no code",
                    usage=usage, tool_name="llm")
    if not ok:
        return None, rt.LlmError("invalid_llm_response", "the model returned no code")
    return code, None


def main():
    task = rt.load_task("code")
    recorder = rt.StepRecorder(RUNTIME_ID)
    constraints = task.get("constraints") or {}
    code = constraints.get("code")
    if not isinstance(code, str) or not code.strip():
        if not rt.llm_configured():
            rt.finish(recorder, task, False, None, "invalid_task",
                      "a code task needs constraints.code, or an LLM (LLM_BASE_URL, LLM_MODEL) to write it")
        code, err = code_from_llm(recorder, task)
        if code is None:
            rt.finish(recorder, task, False, None, err.error_type, str(err))
    timeout_s = float(task.get("timeout") or constraints.get("timeout_s") or python_executor.DEFAULT_TIMEOUT_S)
    memory_mb = int(constraints.get("memory_mb") or python_executor.DEFAULT_MEMORY_MB)
    started = time.time()
    result = python_executor.execute(code, timeout_s, memory_mb)
    observation = result["stdout"] + (("\n[stderr]\n" + result["stderr"]) if result["stderr"] else "")
    recorder.record("code_execution", {"language": "python", "code": code, "timeout_s": timeout_s,
                                       "memory_mb": memory_mb},
                    started, observation, result["success"], result["error_type"], result["error_message"],
                    tool_name="python_executor")
    final = result["stdout"].strip() if result["success"] else None
    rt.finish(recorder, task, result["success"], final, result["error_type"], result["error_message"])


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception as err:  # the runtime itself broke: still one typed output line
        print(f"agentbench-code: {err!r}", file=sys.stderr)
        rt.finish(rt.StepRecorder(RUNTIME_ID), {"task_id": None}, False, None, "runtime_crash", repr(err))
