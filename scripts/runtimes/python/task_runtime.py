"""What every built-in runtime does the same way: read its task from /benchmark/case.json, record
each step as an OpenTelemetry span (OTLP/HTTP JSON to the endpoint our worker injects through the
standard OTEL_* env), call an OpenAI-compatible chat endpoint, and print the one output line the
orchestrator reads (CONTRACT §4.5).

No OpenTelemetry SDK on purpose: the SDK and its protobuf exporter would add ~13 MB to an image
that should stay small, and a step is one span posted when it ends (so the steps of a runtime that
is killed mid-task are already stored). The OTLP JSON encoding is a stable, versioned spec.
Standard library only: the code runtime sits on a busybox root with nothing else installed.
"""

import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

CASE_FILE = os.environ.get("BENCHMARK_CASE_FILE", "/benchmark/case.json")
OBSERVATION_LIMIT = 8000
EXPORT_TIMEOUT_S = 5.0


def load_task(task_type):
    """The case's task: `task` of the case file (batch tasks), else one built from its input."""
    with open(CASE_FILE, encoding="utf-8") as f:
        case = json.load(f)
    task = case.get("task") if isinstance(case.get("task"), dict) else None
    if task is None:
        task = {
            "task_id": str(case.get("run_case_id", "case")),
            "task_type": task_type,
            "description": case.get("user_input", ""),
            "constraints": case.get("reference_output") if isinstance(case.get("reference_output"), dict) else {},
        }
    task.setdefault("constraints", {})
    task.setdefault("expected_tools", [])
    return task


def clip(text, limit=OBSERVATION_LIMIT):
    text = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def _otlp_value(value):
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)}


def _otlp_attributes(attrs):
    return [{"key": k, "value": _otlp_value(v)} for k, v in attrs.items() if v is not None]


def _parse_kv_list(text):
    """OTEL_EXPORTER_OTLP_HEADERS / OTEL_RESOURCE_ATTRIBUTES: `k=v,k2=v2`, values URL-encoded."""
    pairs = {}
    for item in (text or "").split(","):
        if "=" in item:
            k, v = item.split("=", 1)
            pairs[urllib.parse.unquote(k.strip())] = urllib.parse.unquote(v.strip())
    return pairs


class StepRecorder:
    """Numbers steps, exports each as a span and keeps them for the stdout trajectory fallback."""

    def __init__(self, runtime_id):
        self.runtime_id = runtime_id
        self.trace_id = secrets.token_hex(16)
        self.steps = []
        self.usage = {"input_tokens": 0, "output_tokens": 0}
        base = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
            os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").rstrip("/") + "/v1/traces"
        )
        self.endpoint = base if base.startswith("http") else None
        self.headers = {"Content-Type": "application/json", **_parse_kv_list(os.environ.get("OTEL_EXPORTER_OTLP_HEADERS"))}
        resource = _parse_kv_list(os.environ.get("OTEL_RESOURCE_ATTRIBUTES"))
        resource["service.name"] = os.environ.get("OTEL_SERVICE_NAME", runtime_id)
        resource["agentbench.runtime_id"] = runtime_id
        self.resource = resource

    def record(self, action_type, action_params, started, observation, success, error_type=None,
               error_message=None, usage=None, tool_name=None):
        """`started` = time.time() at the step's start; the step ends now."""
        ended = time.time()
        step = {
            "step_id": len(self.steps) + 1,
            "action_type": action_type,
            "action_params": action_params,
            "observation": clip(observation),
            "success": bool(success),
            "error_type": error_type,
            "error_message": clip(error_message, 2000) if error_message else None,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)) + f".{int(started % 1 * 1000):03d}Z",
            "duration": round(ended - started, 6),
        }
        if usage:
            step["usage"] = usage
            self.usage["input_tokens"] += int(usage.get("input_tokens", 0))
            self.usage["output_tokens"] += int(usage.get("output_tokens", 0))
        self.steps.append(step)
        self._export(step, started, ended, tool_name)
        return step

    def _export(self, step, started, ended, tool_name):
        if not self.endpoint:
            return
        event = {k: v for k, v in step.items() if k not in ("timestamp", "duration", "usage")}
        event["action_params"] = json.dumps(step["action_params"], ensure_ascii=False, default=str)
        attrs = {"agentbench.step.action_type": step["action_type"], "tool.name": tool_name}
        if step.get("usage"):
            attrs["gen_ai.usage.input_tokens"] = int(step["usage"].get("input_tokens", 0))
            attrs["gen_ai.usage.output_tokens"] = int(step["usage"].get("output_tokens", 0))
        span = {
            "traceId": self.trace_id,
            "spanId": secrets.token_hex(8),
            "name": step["action_type"],
            "kind": 1,
            "startTimeUnixNano": str(int(started * 1e9)),
            "endTimeUnixNano": str(int(ended * 1e9)),
            "attributes": _otlp_attributes(attrs),
            "events": [{"name": "agentbench.step", "timeUnixNano": str(int(ended * 1e9)),
                        "attributes": _otlp_attributes(event)}],
            "status": {"code": 1 if step["success"] else 2, "message": step["error_message"] or ""},
        }
        body = {"resourceSpans": [{
            "resource": {"attributes": _otlp_attributes(self.resource)},
            "scopeSpans": [{"scope": {"name": "agentbench.runtime", "version": "1"}, "spans": [span]}],
        }]}
        request = urllib.request.Request(self.endpoint, data=json.dumps(body).encode(), headers=self.headers, method="POST")
        try:
            urllib.request.urlopen(request, timeout=EXPORT_TIMEOUT_S).read()
        except (OSError, urllib.error.URLError) as err:
            print(f"agentbench-runtime: span export failed: {err}", file=sys.stderr)


def finish(recorder, task, success, final_result, error_type=None, error_message=None):
    """Prints the output line; exits 1 when the task failed, so its case is `failed` (and a
    `rerun --failed` runs it again) while the line still carries the typed error."""
    output = {
        "task_id": task.get("task_id"),
        "runtime_id": recorder.runtime_id,
        "success": bool(success),
        "final_result": final_result,
        "error_type": error_type,
        "error_message": error_message,
    }
    line = {"output": output, "trajectory": recorder.steps, "usage": recorder.usage}
    sys.stdout.write("\n" + json.dumps(line, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()
    sys.exit(0 if success else 1)


class LlmError(Exception):
    def __init__(self, error_type, message):
        super().__init__(message)
        self.error_type = error_type


def llm_configured():
    return bool(os.environ.get("LLM_BASE_URL") and os.environ.get("LLM_MODEL"))


def chat(messages, tools=None, timeout_s=60.0):
    """One chat-completions call; returns (message, usage). Errors are LlmError with a type."""
    url = os.environ["LLM_BASE_URL"].rstrip("/") + "/chat/completions"
    body = {"model": os.environ["LLM_MODEL"], "messages": messages}
    if tools:
        body["tools"] = tools
    headers = {"Content-Type": "application/json"}
    if os.environ.get("LLM_API_KEY"):
        headers["Authorization"] = "Bearer " + os.environ["LLM_API_KEY"]
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        raise LlmError("llm_error", f"HTTP {err.code} from the model endpoint") from None
    except (OSError, urllib.error.URLError) as err:
        raise LlmError("llm_error", f"model endpoint unreachable: {err}") from None
    try:
        data = json.loads(raw)
        message = data["choices"][0]["message"]
        if not isinstance(message, dict):
            raise TypeError("message is not an object")
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise LlmError("invalid_llm_response", f"not a chat completion: {err}: {clip(raw.decode('utf-8', 'replace'), 300)}") from None
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return message, {
        "input_tokens": int(usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0),
        "output_tokens": int(usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0),
    }
