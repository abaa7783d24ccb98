"""Server-style benchmark test agent traced with the OpenTelemetry Python SDK.

Started by the agent's sandbox_start_command and driven by the case command (an HTTP request),
like agents that run as a service. Each request records a root span and a child span and
answers at once; the spans stay in the SDK's batch queue (the agent's own
OTEL_BSP_SCHEDULE_DELAY may be long) until the process is told to stop: on SIGTERM it shuts the
tracer provider down, which exports what is queued, then exits. It never flushes otherwise, so
its spans reach the collector only if the runner stops it gracefully before killing it.

usage: python3 /agent/serve_case.py <port>      then: curl http://127.0.0.1:<port>/run?q=<question>
"""

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

from opentelemetry import trace
from opentelemetry.instrumentation.auto_instrumentation import initialize


def stop(_signum, _frame):
    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()
    os._exit(0)


class CaseHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        question = parse_qs(urlparse(self.path).query).get("q", ["?"])[0]
        tracer = trace.get_tracer("bench.otel-server-agent", "1.0.0")
        with tracer.start_as_current_span("server.run") as root:
            root.set_attribute("query", question)
            with tracer.start_as_current_span("server.tool") as tool:
                tool.set_attribute("tool.name", "lookup")
            root.set_attribute("final_answer", "42")
        body = json.dumps({"output": "42"}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


def main() -> int:
    initialize()
    signal.signal(signal.SIGTERM, stop)
    HTTPServer(("127.0.0.1", int(sys.argv[1])), CaseHandler).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
