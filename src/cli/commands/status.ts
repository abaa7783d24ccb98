import Table from 'cli-table3';
import { connectTemporalClient, temporalUiLink } from '../../temporal/connection';
import { findExperimentRuns } from '../../temporal/run-lookup';
import { finishedCount, type RunProgress } from '../../domain/experiment-run';
import { SA } from '../../domain/search-attributes';
import { printCaseTable } from '../case-table';
import { loadConfigOrExit, openDatabase, processLogger } from '../process-context';

/** `benchctl status <experimentId>`: its runs in Temporal, then its cases as the platform sees them. */
export async function statusCommand(experimentId: number): Promise<void> {
  const config = loadConfigOrExit();
  const log = processLogger({ ...config, logLevel: 'warn' }, 'status');
  const client = await connectTemporalClient(config);
  try {
    const runs = await findExperimentRuns(client, experimentId);
    const table = new Table({ head: ['workflow', 'status', 'started', 'done', 'failed', 'total'] });
    for (const run of runs) {
      let progress: RunProgress | null = null;
      if (run.status.name === 'RUNNING') {
        progress = await client.workflow
          .getHandle(run.workflowId)
          .query<RunProgress>('progress')
          .catch(() => null);
      }
      const sa = run.typedSearchAttributes;
      table.push([
        run.workflowId,
        run.status.name,
        run.startTime.toISOString(),
        progress ? finishedCount(progress) : (sa.get(SA.casesDone) ?? ''),
        progress ? progress.failed + progress.timeout : (sa.get(SA.casesFailed) ?? ''),
        progress ? progress.total : (sa.get(SA.casesTotal) ?? ''),
      ]);
    }
    process.stdout.write(runs.length ? `${table.toString()}\n` : `no Temporal runs found for experiment ${experimentId}\n`);
    if (runs[0]) process.stdout.write(`Temporal UI: ${temporalUiLink(config, runs[0].workflowId)}\n`);
  } finally {
    await client.connection.close();
  }
  const pool = await openDatabase(config, log, { localDefault: true });
  try {
    await printCaseTable(pool, experimentId);
  } finally {
    await pool.end();
  }
}
