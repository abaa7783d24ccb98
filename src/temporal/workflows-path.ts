import path from 'node:path';

/** The module the worker bundles: every workflow type the task queue serves. */
export const WORKFLOWS_PATH = path.resolve(__dirname, '../../workflows/index.ts');

/**
 * Workflow interceptor modules of orchestrator tracing (src/tracing): the OTel interceptors built
 * for the workflow sandbox (they only add a trace header to scheduled activities and record spans
 * through a sink; no commands, so histories keep their shape). Bundled with the workflow code
 * when tracing is on, or into a prebuilt bundle by `scripts/bundle-workflows.ts --with-tracing`.
 */
export const TRACING_WORKFLOW_INTERCEPTOR_MODULES: readonly string[] = [
  require.resolve('@temporalio/interceptors-opentelemetry/lib/workflow-interceptors'),
];
