import Table from 'cli-table3';
import { RescoreTargetError } from '../../scoring/errors';
import { RESCORABLE_STATUSES, rescoreExperiment } from '../../scoring/experiment-rescore';
import { CliError, loadConfigOrExit, openDatabase, processLogger } from '../process-context';
import { tableStyle } from '../case-table';

/**
 * `benchctl rescore <experimentId> [--scorer key]`: scores the latest finished cases of an
 * experiment again with its evaluators as they are now (src/scoring/experiment-rescore) and prints
 * the new scores.
 */
export async function rescoreCommand(experimentId: number, opts: { scorer?: string }): Promise<void> {
  const config = loadConfigOrExit();
  const log = processLogger(config, 'rescore');
  const pool = await openDatabase(config, log, { localDefault: true });
  try {
    const rescore = await rescoreExperiment(
      { pool, log, evaluator: config.evaluator, concurrentCases: config.consumer.scorerConcurrentCases },
      experimentId,
      opts,
    ).catch((err: unknown) => {
      throw err instanceof RescoreTargetError ? new CliError(err.message) : err;
    });

    const keys = rescore.scorerKeys;
    const table = new Table({
      head: ['case', 'status', ...keys, 'final'],
      style: tableStyle(),
    });
    for (const c of rescore.cases) {
      const byKey = new Map(c.results.map((r) => [r.scorerKey, r.score]));
      table.push([c.runCaseId, c.status, ...keys.map((k) => byKey.get(k) ?? ''), c.finalScore ?? '']);
    }
    process.stdout.write(`${table.toString()}\n`);
    process.stdout.write(
      `rescored ${rescore.cases.length} case(s) of experiment ${experimentId}` +
        (rescore.skipped > 0
          ? `; ${rescore.skipped} skipped (not finished: ${RESCORABLE_STATUSES.join('/')} only)\n`
          : '\n'),
    );
  } finally {
    await pool.end();
  }
}
