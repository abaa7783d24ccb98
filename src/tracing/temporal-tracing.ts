import { readFile } from 'node:fs/promises';
import { trace, type Context as OtelContext } from '@opentelemetry/api';
import type { ReadableSpan, Span, SpanProcessor } from '@opentelemetry/sdk-trace-base';
import type {
  DescribeWorkflowExecutionResponse,
  Next,
  WorkflowClientInterceptor,
  WorkflowDescribeInput,
  WorkflowQueryInput,
  WorkflowStartInput,
  WorkflowStartOutput,
} from '@temporalio/client';
import type {
  ActivityExecuteInput,
  ActivityInboundCallsInterceptor,
  ActivityInterceptorsFactory,
  InjectedSinks,
} from '@temporalio/worker';
import type { OpenTelemetrySinks } from '@temporalio/interceptors-opentelemetry/lib/workflow/definitions';
// The /lib/client and /lib/worker entry points, not the package root: the root also loads the
// workflow-side modules and the plugin, which a client process never needs.
import { OpenTelemetryWorkflowClientInterceptor } from '@temporalio/interceptors-opentelemetry/lib/client';
import {
  makeWorkflowExporter,
  OpenTelemetryActivityInboundInterceptor,
  OpenTelemetryActivityOutboundInterceptor,
} from '@temporalio/interceptors-opentelemetry/lib/worker';
import type { Logger } from '../logger';
import { TRACING_WORKFLOW_INTERCEPTOR_MODULES } from '../temporal/workflows-path';
import { activitySpanIds, workflowSpanAttributes, workflowSpanIds } from './benchmark-span-attributes';
import type { OrchestratorTracing } from './orchestrator-tracing';

/**
 * Temporal's side of orchestrator tracing, so that one run is one trace:
 *   StartWorkflow:experimentRunWorkflow            client (bridge, benchctl run), header `_tracer-data`
 *   └─ RunWorkflow:experimentRunWorkflow           workflow sandbox, exported through the `exporter` sink
 *      ├─ StartActivity:executeCase                 workflow sandbox, header to the activity
 *      │  └─ RunActivity:executeCase                worker, + benchmark.run_case_id / case_phase
 *      └─ ContinueAsNew:experimentRunWorkflow       parent of the next run's RunWorkflow
 * Queries are left out on both sides: `benchctl run` polls `progress` twice a second and the UI
 * queries stack traces, each of which would otherwise be a trace of its own.
 */

/** Starts, signals, cancels and terminates are spans; polled reads (query, describe) are not. */
class RunClientInterceptor extends OpenTelemetryWorkflowClientInterceptor {
  // What WorkflowClient.start calls; the span is active inside, so it gets the experiment id too.
  override startWithDetails(
    input: WorkflowStartInput,
    next: Next<WorkflowClientInterceptor, 'startWithDetails'>,
  ): Promise<WorkflowStartOutput> {
    return super.startWithDetails(input, (i) => {
      trace.getActiveSpan()?.setAttributes(workflowSpanIds(input.options.workflowId));
      return next(i);
    });
  }

  override query(
    input: WorkflowQueryInput,
    next: Next<WorkflowClientInterceptor, 'query'>,
  ): Promise<unknown> {
    return next(input);
  }

  override describe(
    input: WorkflowDescribeInput,
    next: Next<WorkflowClientInterceptor, 'describe'>,
  ): Promise<DescribeWorkflowExecutionResponse> {
    return next(input);
  }
}

export function tracingClientInterceptors(tracing: OrchestratorTracing): {
  workflow: WorkflowClientInterceptor[];
} {
  return { workflow: [new RunClientInterceptor({ tracer: tracing.tracer })] };
}

/** The library's RunActivity span, plus the case ids read from the activity and workflow ids. */
class CaseActivityInboundInterceptor extends OpenTelemetryActivityInboundInterceptor {
  override execute(
    input: ActivityExecuteInput,
    next: Next<ActivityInboundCallsInterceptor, 'execute'>,
  ): Promise<unknown> {
    const { activityId, workflowExecution } = this.ctx.info;
    return super.execute(input, (i) => {
      trace.getActiveSpan()?.setAttributes(activitySpanIds(workflowExecution?.workflowId, activityId));
      return next(i);
    });
  }
}

/** Span names of the workflow side that are dropped: read-only and polled (see above). */
const DROPPED_WORKFLOW_SPANS = /^HandleQuery:/;

/**
 * Workflow spans arrive through the sink as plain objects (not SDK spans), already ended; their
 * attributes are cleaned (see workflowSpanAttributes) before they join the process's batch.
 */
class WorkflowSpanProcessor implements SpanProcessor {
  constructor(private readonly next: SpanProcessor) {}

  onStart(_span: Span, _parentContext: OtelContext): void {
    // Never called: the sink hands over finished spans only.
  }

  onEnd(span: ReadableSpan): void {
    if (DROPPED_WORKFLOW_SPANS.test(span.name)) return;
    this.next.onEnd({
      ...span,
      spanContext: () => span.spanContext(),
      attributes: workflowSpanAttributes(span.attributes),
    });
  }

  // The process's provider owns the batch processor: it flushes and shuts it down.
  forceFlush(): Promise<void> {
    return Promise.resolve();
  }

  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}

/** Workflow spans of a bundle built with interceptors, on a worker whose tracing is off. */
const DISCARD_WORKFLOW_SPANS: InjectedSinks<OpenTelemetrySinks> = {
  exporter: { export: { fn: () => undefined } },
};

interface WorkerTracingOptions {
  activity: ActivityInterceptorsFactory[];
  /** For Worker.create when it bundles itself; a prebuilt bundle carries its own. */
  workflowModules: string[];
  sinks: InjectedSinks<OpenTelemetrySinks> | undefined;
}

/** Whether a prebuilt bundle was made with the tracing interceptors (`--with-tracing`). */
export async function bundleHasTracingInterceptors(codePath: string): Promise<boolean> {
  const code = await readFile(codePath, 'utf8');
  // webpack names every module by its path in the bundle.
  return code.includes('@temporalio/interceptors-opentelemetry/lib/workflow-interceptors');
}

/**
 * What a worker needs for tracing. With `workflowsPath` the interceptor modules are bundled only
 * when tracing is on (off costs nothing). A prebuilt bundle decides for itself: the `exporter` sink
 * is always registered (spans discarded when off) so a bundle built `--with-tracing` never logs
 * "unregistered sink", and a bundle built without it on a tracing worker is reported.
 */
export async function workerTracingOptions(
  tracing: OrchestratorTracing | null,
  opts: { workflowBundlePath: string | undefined; log: Logger },
): Promise<WorkerTracingOptions> {
  if (
    opts.workflowBundlePath !== undefined &&
    tracing &&
    !(await bundleHasTracingInterceptors(opts.workflowBundlePath))
  ) {
    opts.log.warn(
      { code: 'E_TRACING_BUNDLE_WITHOUT_INTERCEPTORS', workflow_bundle: opts.workflowBundlePath },
      'WORKFLOW_BUNDLE_PATH was built without --with-tracing: workflow spans are missing and activity spans start their own traces',
    );
  }
  if (!tracing) {
    return {
      activity: [],
      workflowModules: [],
      sinks: opts.workflowBundlePath !== undefined ? DISCARD_WORKFLOW_SPANS : undefined,
    };
  }
  const tracer = tracing.tracer;
  return {
    activity: [
      (ctx) => ({
        inbound: new CaseActivityInboundInterceptor(ctx, { tracer }),
        outbound: new OpenTelemetryActivityOutboundInterceptor(ctx),
      }),
    ],
    workflowModules: opts.workflowBundlePath !== undefined ? [] : [...TRACING_WORKFLOW_INTERCEPTOR_MODULES],
    sinks: {
      exporter: makeWorkflowExporter(new WorkflowSpanProcessor(tracing.spanProcessor), tracing.resource),
    },
  };
}

/** For replaying histories with the interceptors in the workflow code: their spans go nowhere. */
export function replayTracingOptions(): {
  workflowModules: string[];
  sinks: InjectedSinks<OpenTelemetrySinks>;
} {
  return { workflowModules: [...TRACING_WORKFLOW_INTERCEPTOR_MODULES], sinks: DISCARD_WORKFLOW_SPANS };
}
