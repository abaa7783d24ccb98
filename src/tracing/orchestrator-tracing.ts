import { hostname } from 'node:os';
import { context, diag, DiagLogLevel, propagation, type DiagLogger, type Tracer } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { Resource } from '@opentelemetry/resources';
import {
  AlwaysOnSampler,
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { ATTR_SERVICE_INSTANCE_ID, ATTR_SERVICE_NAME } from '@opentelemetry/semantic-conventions';
import type { Config } from '../config';
import type { Logger } from '../logger';
import { createOtlpHttpTraceExporter, type OtlpHttpTraceExporterSettings } from './otlp-http-trace-exporter';
import { errorText } from '../domain/errors';

/**
 * OpenTelemetry traces of the orchestrator itself: one tracer provider per process, on only when
 * ORCHESTRATOR_OTLP_ENDPOINT is set, flushed on shutdown within a bounded time.
 *
 * Everything is configured explicitly, so the OTEL_* variables the SDK would otherwise read
 * (OTEL_TRACES_SAMPLER*, OTEL_*_LIMIT, OTEL_BSP_*, OTEL_PROPAGATORS, OTEL_TRACES_EXPORTER,
 * OTEL_EXPORTER_OTLP_*) change nothing; OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are never
 * read either (no resource detectors). Those names belong to the agents in case containers.
 *
 * The global tracer provider is left alone: every user gets `tracer` explicitly. Only the context
 * manager and the W3C propagator are registered globally, because the Temporal interceptors
 * inject/extract trace context through the global propagation API.
 */

export type TracedService = 'agentbench-worker' | 'agentbench-bridge' | 'agentbench-run';

export interface OrchestratorTracing {
  readonly serviceName: TracedService;
  readonly tracer: Tracer;
  readonly resource: Resource;
  /** Where spans built elsewhere (workflow spans arriving through the worker's sink) are handed in. */
  readonly spanProcessor: SpanProcessor;
  /** Exports what is buffered; for tests and shutdown. */
  forceFlush(): Promise<void>;
  /** Flushes and stops; resolves within SHUTDOWN_BUDGET_MS even when the collector does not answer. */
  shutdown(): Promise<void>;
}

/** Export of one batch, retries included; the collector is best-effort, never back-pressure. */
const EXPORT_TIMEOUT_MS = 10_000;
/** Graceful shutdown never waits longer than this for the last spans to leave. */
export const SHUTDOWN_BUDGET_MS = 3_000;
const BATCH = {
  maxQueueSize: 8192,
  maxExportBatchSize: 512,
  scheduledDelayMillis: 2000,
  exportTimeoutMillis: EXPORT_TIMEOUT_MS,
};
const LIMITS = {
  attributeCountLimit: 128,
  attributeValueLengthLimit: 4096,
  eventCountLimit: 128,
  linkCountLimit: 128,
  attributePerEventCountLimit: 128,
  attributePerLinkCountLimit: 128,
};
/** At most one SDK diagnostic line per interval (an unreachable collector fails every batch). */
const DIAG_LOG_INTERVAL_MS = 60_000;

interface StartTracingOptions {
  service: TracedService;
  log: Logger;
  /** Tests replace the OTLP exporter; it is only ever created when an endpoint is configured. */
  createExporter?: (settings: OtlpHttpTraceExporterSettings) => SpanExporter;
}

/** The process's tracing, or null (and nothing created, nothing registered) without an endpoint. */
export function startOrchestratorTracing(
  config: Config,
  opts: StartTracingOptions,
): OrchestratorTracing | null {
  const { endpoint, headers } = config.tracing;
  if (!endpoint) return null;
  const log = opts.log.child({ component: 'tracing' });
  const exporter = (opts.createExporter ?? createOtlpHttpTraceExporter)({
    url: endpoint,
    headers,
    timeoutMillis: EXPORT_TIMEOUT_MS,
    concurrencyLimit: 4,
  });
  const resource = new Resource({
    [ATTR_SERVICE_NAME]: opts.service,
    [ATTR_SERVICE_INSTANCE_ID]: `${hostname()}:${process.pid}`,
  });
  const spanProcessor = new BatchSpanProcessor(exporter, BATCH);
  const provider = new BasicTracerProvider({
    resource,
    sampler: new ParentBasedSampler({ root: new AlwaysOnSampler() }),
    spanLimits: LIMITS,
    generalLimits: {
      attributeCountLimit: LIMITS.attributeCountLimit,
      attributeValueLengthLimit: LIMITS.attributeValueLengthLimit,
    },
    spanProcessors: [spanProcessor],
  });
  const releaseGlobals = acquireGlobals(log);
  // The endpoint is logged without credentials: the parsed config rejects userinfo, headers stay out.
  log.info(
    { code: 'TRACING_STARTED', service: opts.service, endpoint, headers: Object.keys(headers).length },
    'orchestrator traces on',
  );

  let stopped: Promise<void> | null = null;
  return {
    serviceName: opts.service,
    tracer: provider.getTracer('agentbench-orchestrator'),
    resource,
    spanProcessor,
    forceFlush: () => provider.forceFlush(),
    shutdown() {
      stopped ??= (async () => {
        let timer: NodeJS.Timeout | undefined;
        const budget = new Promise<'timeout'>((resolve) => {
          timer = setTimeout(() => resolve('timeout'), SHUTDOWN_BUDGET_MS);
          timer.unref();
        });
        const outcome = await Promise.race([provider.shutdown().then(() => 'done' as const), budget]).catch(
          (err: unknown) => {
            log.warn({ code: 'E_TRACING_SHUTDOWN', error: errorText(err) }, 'trace flush failed');
            return 'failed' as const;
          },
        );
        clearTimeout(timer);
        if (outcome === 'timeout') {
          log.warn(
            { code: 'E_TRACING_SHUTDOWN', budget_ms: SHUTDOWN_BUDGET_MS },
            'trace flush did not finish in time; remaining spans dropped',
          );
        }
        releaseGlobals();
      })();
      return stopped;
    },
  };
}

// ---- process-wide registrations -------------------------------------------------------------

let holders = 0;
let release: (() => void) | null = null;

/**
 * Registers the context manager, the propagator and a diagnostics logger for as long as any
 * tracing of this process is running (a test may run a "bridge" and a "worker" side by side).
 * Whatever another library registered first is kept, and not disabled by us later.
 */
function acquireGlobals(log: Logger): () => void {
  if (holders === 0) {
    const manager = new AsyncLocalStorageContextManager().enable();
    const ownsContext = context.setGlobalContextManager(manager);
    if (!ownsContext) manager.disable();
    const ownsPropagation = propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    const ownsDiag = diag.setLogger(throttledDiagLogger(log), {
      logLevel: DiagLogLevel.WARN,
      suppressOverrideMessage: true,
    });
    release = () => {
      if (ownsContext) context.disable();
      if (ownsPropagation) propagation.disable();
      if (ownsDiag) diag.disable();
    };
  }
  holders += 1;
  let released = false;
  return () => {
    if (released) return;
    released = true;
    holders -= 1;
    if (holders === 0) {
      release?.();
      release = null;
    }
  };
}

/** SDK diagnostics (failed exports, dropped spans) as warn lines, one per interval at most. */
function throttledDiagLogger(log: Logger): DiagLogger {
  let last = 0;
  let suppressed = 0;
  const write = (message: string) => {
    const now = Date.now();
    if (now - last < DIAG_LOG_INTERVAL_MS) {
      suppressed += 1;
      return;
    }
    last = now;
    log.warn({ code: 'E_TRACING_EXPORT', suppressed }, `opentelemetry: ${message}`);
    suppressed = 0;
  };
  const ignore = () => undefined;
  return { error: write, warn: write, info: ignore, debug: ignore, verbose: ignore };
}
