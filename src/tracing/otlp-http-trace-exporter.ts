import { createRequire } from 'node:module';
import { OTLPExporterBase } from '@opentelemetry/otlp-exporter-base';
import { createOtlpHttpExportDelegate } from '@opentelemetry/otlp-exporter-base/node-http';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';

/**
 * The orchestrator's OTLP/HTTP protobuf span exporter, configured from our settings alone.
 *
 * Why not `OTLPTraceExporter` of @opentelemetry/exporter-trace-otlp-proto: its constructor merges
 * OTEL_EXPORTER_OTLP_HEADERS / OTEL_EXPORTER_OTLP_TRACES_HEADERS from the process environment
 * into every request, whatever headers it is given — a credential meant for some other backend
 * would be sent to ours. The delegate below is the same machinery (transport, retries, bounded
 * queue) minus that environment lookup, so no OTEL_EXPORTER_OTLP_* variable has any effect.
 */

export interface OtlpHttpTraceExporterSettings {
  /** Full URL, `…/v1/traces`. */
  url: string;
  headers: Readonly<Record<string, string>>;
  /** Per request, retries included. */
  timeoutMillis: number;
  /** Export requests in flight at once; more are refused (spans dropped) rather than queued. */
  concurrencyLimit: number;
}

interface TraceSerializer {
  serializeRequest(spans: ReadableSpan[]): Uint8Array | undefined;
  deserializeResponse(data: Uint8Array): unknown;
}

/**
 * The protobuf serializer of the transformer release the exporter base is built with (0.57:
 * OTel JS SDK 1.x spans, which is what @temporalio/interceptors-opentelemetry 1.24 produces).
 * Resolved from the exporter base because the top-level @opentelemetry/otlp-transformer is the
 * SDK-2 line (it reads `parentSpanContext`/`instrumentationScope`, which 1.x spans do not have).
 */
function protobufTraceSerializer(): TraceSerializer {
  const requireFromExporterBase = createRequire(require.resolve('@opentelemetry/otlp-exporter-base'));
  // require() is untyped; the export is checked right below.
  const transformer = requireFromExporterBase('@opentelemetry/otlp-transformer') as {
    ProtobufTraceSerializer?: TraceSerializer;
  };
  const serializer = transformer.ProtobufTraceSerializer;
  if (!serializer || typeof serializer.serializeRequest !== 'function') {
    throw new Error(
      '@opentelemetry/otlp-transformer (of @opentelemetry/otlp-exporter-base) has no ProtobufTraceSerializer',
    );
  }
  return serializer;
}

export function createOtlpHttpTraceExporter(settings: OtlpHttpTraceExporterSettings): SpanExporter {
  const headers = {
    ...settings.headers,
    'content-type': 'application/x-protobuf',
    'user-agent': 'agentbench-orchestrator',
  };
  return new OTLPExporterBase<ReadableSpan[]>(
    createOtlpHttpExportDelegate<ReadableSpan[], unknown>(
      {
        url: settings.url,
        headers: () => headers,
        timeoutMillis: settings.timeoutMillis,
        concurrencyLimit: settings.concurrencyLimit,
        compression: 'none',
        agentOptions: { keepAlive: true },
      },
      protobufTraceSerializer(),
    ),
  );
}
