import Table from 'cli-table3';
import { connectTemporalClient } from '../../temporal/connection';
import { experimentRunsUiLink } from '../../temporal/run-lookup';
import { finishedCases } from '../../domain/run-status';
import { listRunRecords } from '../../db/run-view-repository';
import { summarizeRuns, WorkflowViews } from '../../runs/run-summary';
import { latestCases, printCaseTable, tableStyle } from '../case-table';
import { CliError, loadConfigOrExit, openDatabase, processLogger } from '../process-context';

const MAX_RUNS_SHOWN = 50;

/**
 * `benchctl status <experimentId>`: its runs (the same summaries `GET /v1/runs` serves: status from
 * the cases in Postgres and the workflow's state in Temporal), then its cases as the platform sees them.
 * A missing (or deleted) experiment is an error, not an empty listing.
 */
export async function statusCommand(experimentId: number, opts: { json?: boolean } = {}): Promise<void> {
  const config = loadConfigOrExit();
  const log = processLogger({ ...config, logLevel: 'warn' }, 'status');
  const pool = await openDatabase(config, log, { localDefault: true });
  try {
    const { rowCount } = await pool.query(
      'SELECT 1 FROM experiments WHERE id = $1 AND deleted_at IS NULL AND is_deleted = FALSE',
      [experimentId],
    );
    if (!rowCount) throw new CliError(`experiment ${experimentId} does not exist`);
    const client = await connectTemporalClient(config);
    let runs;
    try {
      const records = await listRunRecords(pool, { experimentId, limit: MAX_RUNS_SHOWN });
      runs = await summarizeRuns({ client, pool, config }, new WorkflowViews(client), records);
    } finally {
      await client.connection.close();
    }
    if (opts.json) {
      const cases = await latestCases(pool, experimentId);
      process.stdout.write(`${JSON.stringify({ experimentId, runs, cases })}\n`);
      return;
    }
    const table = new Table({
      head: ['run (workflow)', 'status', 'workflow', 'submitted', 'done', 'failed', 'total'],
      style: tableStyle(),
    });
    for (const run of runs) {
      table.push([
        run.workflowId,
        run.status,
        run.workflowStatus ?? 'not found',
        run.createdAt.toISOString(),
        finishedCases(run.cases),
        run.cases.failed + run.cases.timeout,
        run.cases.total,
      ]);
    }
    process.stdout.write(
      runs.length ? `${table.toString()}\n` : `no runs found for experiment ${experimentId}\n`,
    );
    if (runs[0]) process.stdout.write(`Temporal UI: ${runs[0].temporalUiUrl}\n`);
    process.stdout.write(
      `All runs of this experiment (this deployment): ${experimentRunsUiLink(config, experimentId)}\n`,
    );
    await printCaseTable(pool, experimentId);
  } finally {
    await pool.end();
  }
}
