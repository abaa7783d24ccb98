/**
 * Bundles the workflow code once, ahead of time, as Temporal recommends for production: a worker
 * started with WORKFLOW_BUNDLE_PATH loads this file instead of running webpack at start-up (faster
 * start, a few hundred MB less peak memory).
 *   node --import tsx scripts/bundle-workflows.ts [out=dist/workflow-bundle.js] [--with-tracing]
 * `--with-tracing` bakes in the orchestrator-tracing workflow interceptors (a prebuilt bundle
 * cannot take them at start-up): needed for workflow spans when ORCHESTRATOR_OTLP_ENDPOINT is set.
 * Without ORCHESTRATOR_OTLP_ENDPOINT such a bundle still records its spans and the worker drops them,
 * so bundles for benchmarks and tracing-free deployments are built without it.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import { TRACING_WORKFLOW_INTERCEPTOR_MODULES, WORKFLOWS_PATH } from '../src/temporal/workflows-path';

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const withTracing = args.includes('--with-tracing');
  const unknown = args.filter((a) => a.startsWith('--') && a !== '--with-tracing');
  if (unknown.length > 0)
    throw new Error(
      `unknown option ${unknown.join(' ')} (usage: bundle-workflows.ts [out] [--with-tracing])`,
    );
  const outArg = args.find((a) => !a.startsWith('--'));
  const out = path.resolve(outArg ?? path.join(__dirname, '../dist/workflow-bundle.js'));
  const { code } = await bundleWorkflowCode({
    workflowsPath: WORKFLOWS_PATH,
    workflowInterceptorModules: withTracing ? [...TRACING_WORKFLOW_INTERCEPTOR_MODULES] : [],
  });
  await mkdir(path.dirname(out), { recursive: true });
  await writeFile(out, code);
  process.stdout.write(
    `workflow bundle: ${out} (${(code.length / 1024).toFixed(0)} KiB${withTracing ? ', with tracing interceptors' : ''})\n`,
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`${String(err)}\n`);
  process.exit(1);
});
