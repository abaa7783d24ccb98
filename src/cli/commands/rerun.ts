import { DispatchRefusedError, dispatchRetryFailed } from '../../local-run/platform-dispatch';
import { CliError } from '../process-context';
import { superviseRun } from '../run-supervisor';
import { openRunDeps } from './run';

/**
 * `benchctl rerun <experimentId> --failed`: the platform's "retry failed" — each latest row whose
 * status is exactly `failed` is superseded by a new attempt (is_latest switched) — then a run of
 * just those new rows. Successful cases are never touched.
 */
export async function rerunCommand(
  experimentId: number,
  opts: { failed: boolean; worker: boolean },
): Promise<void> {
  if (!opts.failed) throw new CliError('only --failed is supported: say which cases to rerun', 2);
  const deps = await openRunDeps(opts);
  try {
    let message;
    try {
      ({ message } = await dispatchRetryFailed(deps.pool, experimentId, 'benchctl rerun'));
    } catch (err) {
      if (err instanceof DispatchRefusedError && err.code === 'E_NO_FAILED_CASES') {
        process.stdout.write(`experiment ${experimentId} has no failed cases\n`);
        return;
      }
      if (err instanceof DispatchRefusedError) throw new CliError(err.message);
      throw err;
    }
    await superviseRun(deps, message, {});
  } finally {
    await deps.close();
  }
}
