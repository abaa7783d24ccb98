"""Benchmark test agent traced with the OpenTelemetry Python SDK.

Configured by nothing but the standard OTEL_* environment (endpoint, protocol, headers, service
name, resource attributes, exporters): `initialize()` is what `opentelemetry-instrument` runs, so
this is the zero-code setup any SDK-based agent gets. Creates a root span with a few child spans
carrying the attributes the trajectory mapping picks (query, tool.name, results, final_answer ...),
flushes, and prints the answer as the stdout JSON line the runner parses.

usage: python3 /agent/run_case.py [question ...]
"""

import json
import sys
import time

from opentelemetry import trace
from opentelemetry.instrumentation.auto_instrumentation import initialize


def work() -> None:
    """Each step takes a few milliseconds, as real ones do, so the steps' order is the spans' order."""
    time.sleep(0.005)


def main() -> int:
    initialize()
    question = " ".join(sys.argv[1:]) or "what time is it in Tokyo?"
    tracer = trace.get_tracer("bench.otel-sdk-agent", "1.0.0")
    with tracer.start_as_current_span("agent.run") as root:
        root.set_attribute("query", question)
        with tracer.start_as_current_span("llm.plan") as plan:
            plan.set_attribute("model", "fake-llm-1")
            plan.set_attribute("gen_ai.usage.input_tokens", 120)
            plan.set_attribute("gen_ai.usage.output_tokens", 30)
            work()
        with tracer.start_as_current_span("tool.search") as search:
            search.set_attribute("tool.name", "search")
            search.set_attribute("query", question)
            search.set_attribute("results", json.dumps(["Tokyo is UTC+9", "It is 12:00 in Tokyo"]))
            work()
            search.add_event("search.done", {"hits": 2})
        with tracer.start_as_current_span("llm.answer") as answer_span:
            answer_span.set_attribute("model", "fake-llm-1")
            answer_span.set_attribute("gen_ai.usage.input_tokens", 200)
            answer_span.set_attribute("gen_ai.usage.output_tokens", 12)
            work()
        answer = "12:00"
        root.set_attribute("final_answer", answer)
    provider = trace.get_tracer_provider()
    flushed = provider.force_flush(10_000) if hasattr(provider, "force_flush") else False
    print(json.dumps({"output": answer, "spans_flushed": bool(flushed)}))
    return 0 if flushed else 1


if __name__ == "__main__":
    sys.exit(main())
