import { Client, Connection } from '@temporalio/client';
import type { Config } from '../config';
import type { OrchestratorTracing } from '../tracing/orchestrator-tracing';
import { tracingClientInterceptors } from '../tracing/temporal-tracing';

/**
 * With `tracing`, workflow starts (and signals, queries, cancels) are spans whose context travels
 * to the workflow in a header: the bridge's and `benchctl run`'s clients pass it.
 */
export async function connectTemporalClient(
  config: Config,
  opts: { tracing?: OrchestratorTracing | null } = {},
): Promise<Client> {
  const connection = await Connection.connect({ address: config.temporal.address });
  return new Client({
    connection,
    namespace: config.temporal.namespace,
    ...(opts.tracing ? { interceptors: tracingClientInterceptors(opts.tracing) } : {}),
  });
}

/** Link to a run in the Temporal Web UI. */
export function temporalUiLink(config: Config, workflowId: string): string {
  return `${config.temporal.uiUrl}/namespaces/${encodeURIComponent(config.temporal.namespace)}/workflows/${encodeURIComponent(workflowId)}`;
}
