"""The `type: python` mock handler process (CONTRACT §2.5), run by python-handler-pool.ts inside a
container of its own per case (no network, read-only root, a uid of its own, no host files).

Protocol: it prints `{"ready": true}` once, then answers every request line
`{"id", "code", "request": {method, url, headers: [[k, v]...], body_b64}}` with one line
`{"id", "ok": true, "status", "headers", "content_type", "body_b64"}` or
`{"id", "ok": false, "error": "E_MOCK_PYTHON_...: ..."}`. The protocol runs on duplicates of
stdin/stdout; fds 0/1 of user code are /dev/null and stderr, so a handler's print() cannot corrupt
it. End of stdin (the worker closed the stream, or died) ends the process and so the container.

argv: the address-space limit in bytes (0: none) and a backstop deadline per request in seconds: the
worker kills the container at its own deadline; the alarm ends a request whose worker is gone.
"""
import base64, builtins, json, os, re, resource, signal, sys, time
from urllib.parse import parse_qs, urlsplit

memory_bytes, backstop_seconds = int(sys.argv[1]), int(sys.argv[2])
if memory_bytes > 0:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
# No fork, no threads: a handler cannot leave processes behind that outlive its deadline.
resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
# Only what a handler may rely on; the container runtime adds HOSTNAME and HOME.
for _key in list(os.environ):
    if _key not in ("PATH", "LANG", "PYTHONDONTWRITEBYTECODE"):
        del os.environ[_key]

proto_in = os.fdopen(os.dup(0), "r", encoding="utf-8")
proto_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
null_fd = os.open(os.devnull, os.O_RDONLY)
os.dup2(null_fd, 0)
os.dup2(2, 1)
sys.stdin = open(os.devnull, "r")
sys.stdout = sys.stderr

class HandlerError(Exception):
    pass

compiled = {}

def build_request(r):
    raw = base64.b64decode(r["body_b64"])
    parts = urlsplit(r["url"])
    headers = {}
    for name, value in r["headers"]:
        headers[name] = value
    return {
        "method": r["method"],
        "url": r["url"],
        "scheme": parts.scheme,
        "host": parts.netloc,
        "path": parts.path or "/",
        "query": parse_qs(parts.query, keep_blank_values=True),
        "headers": headers,
        "body_text": raw.decode("utf-8", errors="replace"),
        "body_bytes_b64": r["body_b64"],
    }

def run(msg):
    code = msg["code"]
    if not code.strip():
        raise HandlerError("E_MOCK_PYTHON_EMPTY_CODE")
    program = compiled.get(code)
    if program is None:
        program = compiled[code] = compile(code, "<mock_rule>", "exec")
    scope = {"__builtins__": builtins, "__name__": "mock_rule", "json": json, "re": re, "time": time}
    exec(program, scope)
    handle = scope.get("handle")
    if not callable(handle):
        raise HandlerError("E_MOCK_PYTHON_MISSING_HANDLE: define handle(request)")
    result = handle(build_request(msg["request"]))
    if not isinstance(result, dict):
        raise HandlerError("E_MOCK_PYTHON_INVALID_RESULT: handle(request) must return dict")
    status = result.get("status")
    if status:
        status = int(status)
        if not 100 <= status <= 599:
            raise HandlerError("E_MOCK_PYTHON_INVALID_RESULT: status must be between 100 and 599")
    else:
        status = None
    headers = result.get("headers") or {}
    if not isinstance(headers, dict):
        raise HandlerError("E_MOCK_PYTHON_INVALID_RESULT: headers must be a dict")
    content_type = None
    if "json" in result:
        body = json.dumps(result["json"], ensure_ascii=False).encode("utf-8")
        content_type = "application/json"
    elif "text" in result:
        body = str(result["text"]).encode("utf-8")
        content_type = "text/plain; charset=utf-8"
    elif "body_base64" in result:
        body = base64.b64decode(result["body_base64"] or b"")
    else:
        body = b""
    return {
        "status": status,
        "headers": {str(k): str(v) for k, v in headers.items()},
        "content_type": content_type,
        "body_b64": base64.b64encode(body).decode("ascii"),
    }

proto_out.write(json.dumps({"ready": True}) + "\n")
proto_out.flush()
for line in proto_in:
    msg = json.loads(line)
    # SIGALRM keeps its default action (terminate): no Python handler that user code could outrun.
    signal.alarm(backstop_seconds)
    try:
        reply = {"id": msg["id"], "ok": True, **run(msg)}
    except HandlerError as e:
        reply = {"id": msg["id"], "ok": False, "error": str(e)}
    except BaseException as e:  # user code may raise anything, SystemExit and MemoryError included
        reply = {"id": msg["id"], "ok": False, "error": "E_MOCK_PYTHON_ERROR: %s: %s" % (type(e).__name__, e)}
    try:
        line = json.dumps(reply)
    except BaseException as e:
        line = json.dumps({"id": msg["id"], "ok": False, "error": "E_MOCK_PYTHON_ERROR: %s: %s" % (type(e).__name__, e)})
    signal.alarm(0)
    proto_out.write(line + "\n")
    proto_out.flush()
