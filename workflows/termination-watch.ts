import { CancellationScope, isCancellation, patched, sleep } from '@temporalio/workflow';
import type { RunRef } from '../src/domain/activity-contract';
import { bookkeeping } from './activity-proxies';

/**
 * Honours the platform's manual termination while the run is in flight (the original only checked
 * at start, §13.6): a watcher re-reads the run's state every `checkSeconds`, and a case that finds
 * its row canceled asks at once. Either way a stop cancels the case loop's scope.
 */
export class TerminationWatch {
  /** Why the platform stopped the run; null while it has not. */
  stoppedBy: string | null = null;
  /** The watcher's own scope, so finishing the run cancels its pending timer. */
  private readonly scope = new CancellationScope();

  constructor(
    private readonly run: RunRef,
    private readonly caseLoop: CancellationScope,
    private readonly checkSeconds: number,
  ) {}

  start(): void {
    void this.scope
      .run(async () => {
        for (;;) {
          await sleep(`${this.checkSeconds}s`);
          const state = await bookkeeping.checkRunState(this.run);
          if (state.stop) {
            this.stoppedBy = state.stop;
            this.caseLoop.cancel();
            return;
          }
        }
      })
      .catch((err: unknown) => {
        if (!isCancellation(err)) throw err;
      });
  }

  stop(): void {
    this.scope.cancel();
  }

  /**
   * A case found its row canceled under it: the platform may have terminated the run. Look now
   * rather than at the watcher's next tick, or the remaining cases (all canceled by the platform)
   * could end at once and the run report "completed". Awaited inside the case, so the case loop
   * cannot finish before the answer.
   */
  async recheckAfter(status: string): Promise<void> {
    if (status !== 'canceled' || this.stoppedBy !== null) return;
    if (!patched('recheck-termination-on-canceled-case')) return;
    const state = await bookkeeping.checkRunState(this.run);
    if (state.stop && this.stoppedBy === null) {
      this.stoppedBy = state.stop;
      this.caseLoop.cancel();
    }
  }
}
