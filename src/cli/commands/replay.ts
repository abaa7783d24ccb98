import { existsSync } from 'node:fs';
import { connectTemporalClient } from '../../temporal/connection';
import {
  fetchWorkflowHistories,
  readHistoryFile,
  replayHistories,
  type ReplayInput,
} from '../../temporal/history-replay';
import { installTemporalLogging } from '../../temporal/runtime-logging';
import { CliError, loadConfigOrExit, processLogger } from '../process-context';

/**
 * `benchctl replay <workflowId | history.json>`: replays real history through the current workflow
 * code. Non-zero exit, with the reason, when the code would break that run (non-determinism).
 */
export async function replayCommand(target: string): Promise<void> {
  const config = loadConfigOrExit();
  installTemporalLogging(processLogger({ ...config, logLevel: 'error' }, 'replay'), 'ERROR');
  let inputs: ReplayInput[];
  if (existsSync(target)) {
    inputs = [await readHistoryFile(target)];
  } else {
    const client = await connectTemporalClient(config);
    try {
      inputs = await fetchWorkflowHistories(client, target);
    } finally {
      await client.connection.close();
    }
  }
  // A worker with ORCHESTRATOR_OTLP_ENDPOINT runs the workflow code with the tracing interceptors.
  const results = await replayHistories(inputs, undefined, {
    tracing: config.tracing.endpoint !== undefined,
  });
  let failed = 0;
  results.forEach((r, i) => {
    if (r.error) {
      failed++;
      process.stdout.write(
        `FAIL run ${i + 1}/${results.length} of ${r.workflowId}: ${r.error.name}: ${r.error.message}\n`,
      );
    } else {
      process.stdout.write(`ok   run ${i + 1}/${results.length} of ${r.workflowId}\n`);
    }
  });
  if (failed > 0)
    throw new CliError(
      `${failed} of ${results.length} histories do not replay with the current workflow code`,
    );
}
