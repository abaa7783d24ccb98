import { connectTemporalClient } from '../../temporal/connection';
import { findExperimentRuns } from '../../temporal/run-lookup';
import { CliError, loadConfigOrExit } from '../process-context';

const WAIT_MS = 120_000;

/**
 * `benchctl cancel <experimentId>`: cancels its running workflows. Each run kills its in-flight
 * containers, marks its remaining cases canceled and leaves the experiment manual_terminated, as
 * the platform's own terminate does.
 */
export async function cancelCommand(experimentId: number, opts: { wait: boolean }): Promise<void> {
  const config = loadConfigOrExit();
  const client = await connectTemporalClient(config);
  try {
    const runs = await findExperimentRuns(client, experimentId, { runningOnly: true });
    if (runs.length === 0) throw new CliError(`no running workflow for experiment ${experimentId}`);
    for (const run of runs) {
      await client.workflow.getHandle(run.workflowId).cancel();
      process.stdout.write(`cancel requested: ${run.workflowId}\n`);
    }
    if (!opts.wait) return;
    const deadline = Date.now() + WAIT_MS;
    for (const run of runs) {
      const handle = client.workflow.getHandle(run.workflowId);
      for (;;) {
        const d = await handle.describe();
        if (d.status.name !== 'RUNNING') {
          process.stdout.write(`${run.workflowId}: ${d.status.name}\n`);
          break;
        }
        if (Date.now() > deadline) throw new CliError(`${run.workflowId} still running after ${WAIT_MS / 1000}s`);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  } finally {
    await client.connection.close();
  }
}
