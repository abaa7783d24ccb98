import { connectTemporalClient } from '../../temporal/connection';
import { cancelExperimentRuns } from '../../runs/run-control';
import { CliError, loadConfigOrExit, openDatabase, processLogger } from '../process-context';

const WAIT_MS = 120_000;

/**
 * `benchctl cancel <experimentId>`: cancels its running workflows (of this deployment only). Each run kills its in-flight
 * containers, marks its remaining cases canceled and leaves the experiment manual_terminated, as
 * the platform's own terminate does.
 */
export async function cancelCommand(experimentId: number, opts: { wait: boolean }): Promise<void> {
  const config = loadConfigOrExit();
  const pool = await openDatabase(config, processLogger({ ...config, logLevel: 'warn' }, 'cancel'), {
    localDefault: true,
  });
  const client = await connectTemporalClient(config).catch(async (err: unknown) => {
    await pool.end();
    throw err;
  });
  try {
    const canceled = await cancelExperimentRuns(
      { client, pool, deploymentId: config.deploymentId },
      experimentId,
    );
    if (canceled.length === 0) throw new CliError(`no running workflow for experiment ${experimentId}`);
    for (const workflowId of canceled) process.stdout.write(`cancel requested: ${workflowId}\n`);
    if (!opts.wait) return;
    const deadline = Date.now() + WAIT_MS;
    for (const workflowId of canceled) {
      const handle = client.workflow.getHandle(workflowId);
      for (;;) {
        const d = await handle.describe();
        if (d.status.name !== 'RUNNING') {
          process.stdout.write(`${workflowId}: ${d.status.name}\n`);
          break;
        }
        if (Date.now() > deadline) throw new CliError(`${workflowId} still running after ${WAIT_MS / 1000}s`);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  } finally {
    await client.connection.close();
    await pool.end();
  }
}
