"""Benchmark test agent that reports its trace by hand, like the original platform's demo agent.

Posts one OTLP JSON document (a root span and a tool span) to <mock_base_url>/api/otel/v1/traces,
tagging it itself with benchmark.run_case_id / benchmark.experiment_id; the command template
passes them ({{mock.base_url}}, {{run_case.run_case_id}}, {{experiment.id}}). It sends no ingest
token unless OTEL_EXPORTER_OTLP_HEADERS carries one (as a plain header). Prints the answer and the
collector's response in the stdout JSON line, and exits 0 whatever the collector answered.

usage: python3 /agent/post_spans.py <mock_base_url> <run_case_id> <experiment_id>
"""

import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request


def attribute(key, value):
    return {"key": key, "value": {"stringValue": str(value)}}


def headers_from_env():
    headers = {"content-type": "application/json"}
    for pair in os.environ.get("OTEL_EXPORTER_OTLP_HEADERS", "").split(","):
        name, sep, value = pair.partition("=")
        if sep and name.strip():
            headers[name.strip()] = value.strip()
    return headers


def main() -> int:
    base_url, run_case_id, experiment_id = sys.argv[1], sys.argv[2], sys.argv[3]
    trace_id = secrets.token_hex(16)
    root_id, tool_id = secrets.token_hex(8), secrets.token_hex(8)
    now = time.time_ns()
    claims = [attribute("benchmark.run_case_id", run_case_id), attribute("benchmark.experiment_id", experiment_id)]
    spans = [
        {
            "traceId": trace_id,
            "spanId": root_id,
            "name": "manual.run",
            "startTimeUnixNano": str(now - 3_000_000_000),
            "endTimeUnixNano": str(now),
            "attributes": claims + [attribute("query", "capital of France?"), attribute("final_answer", "Paris")],
            "status": {"code": 1},
        },
        {
            "traceId": trace_id,
            "spanId": tool_id,
            "parentSpanId": root_id,
            "name": "manual.tool",
            "startTimeUnixNano": str(now - 2_000_000_000),
            "endTimeUnixNano": str(now - 1_000_000_000),
            "attributes": claims + [attribute("tool.name", "lookup"), attribute("path", "/wiki/France")],
        },
    ]
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": [attribute("service.name", "manual-agent")]},
                "scopeSpans": [{"scope": {"name": "manual"}, "spans": spans}],
            }
        ]
    }
    request = urllib.request.Request(
        base_url.rstrip("/") + "/api/otel/v1/traces",
        data=json.dumps(document).encode(),
        headers=headers_from_env(),
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read().decode()
    print(json.dumps({"output": "Paris", "otel_status": status, "otel_response": body}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
