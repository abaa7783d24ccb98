import { supersedeFailedCases } from '../../db/run-case-repository';
import { buildMessageFromRows } from '../../local-run/platform-message';
import { CliError } from '../process-context';
import { superviseRun } from '../run-supervisor';
import { openRunDeps } from './run';

/**
 * `benchctl rerun <experimentId> --failed`: the platform's "retry failed" — each latest row whose
 * status is exactly `failed` is superseded by a new attempt (is_latest switched) — then a run of
 * just those new rows. Successful cases are never touched.
 */
export async function rerunCommand(experimentId: number, opts: { failed: boolean; worker: boolean }): Promise<void> {
  if (!opts.failed) throw new CliError('only --failed is supported: say which cases to rerun', 2);
  const deps = await openRunDeps(opts);
  try {
    const superseded = await supersedeFailedCases(deps.pool, experimentId);
    if (superseded.length === 0) {
      process.stdout.write(`experiment ${experimentId} has no failed cases\n`);
      return;
    }
    const message = await buildMessageFromRows(deps.pool, experimentId, superseded.map((s) => s.newRunCaseId), 'benchctl rerun');
    await superviseRun(deps, message, { worker: opts.worker });
  } finally {
    await deps.close();
  }
}
