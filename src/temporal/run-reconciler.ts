import { isOpenWorkflowState } from '../domain/run-status';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type pg from 'pg';
import { closeOrphanedCases, listIdleActiveRunCases } from '../db/run-control-repository';
import { errorText } from '../domain/errors';
import type { Logger } from '../logger';

interface RunReconcilerParams {
  pool: pg.Pool;
  client: Client;
  log: Logger;
  /** A row must be unchanged this long before it is looked at (the workflow's own last writes go first). */
  minIdleSeconds: number;
  resultEvents?: boolean;
}

/** What Temporal says of a run: still open, closed (how), or nothing we can rely on. */
type RunState = { open: true } | { open: false; status: string } | { unknown: string };

/**
 * Compensation for runs that end outside their own workflow code (issue 13 item 6): `temporal
 * workflow terminate`, a workflow that failed or timed out, a cancel that never reached cleanup.
 * Such a run leaves rows running/pending and the experiment `consuming` forever. Every sweep looks
 * at active rows that have not changed for a while and asks Temporal about the runs holding them;
 * a row all of whose runs are closed becomes `canceled` (terminated or canceled runs) or `failed`
 * (failed, timed out, or completed without closing it) with E_RUN_CLOSED_UNFINISHED, and the
 * experiment follows the §3.4 refresh. It fails closed: a run Temporal does not know (another
 * namespace's, or retention passed) or an error asking keeps the row, to be looked at again.
 */
export class RunReconciler {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(private readonly p: RunReconcilerParams) {}

  async sweep(): Promise<{ closed: number }> {
    const { pool, log } = this.p;
    const candidates = await listIdleActiveRunCases(pool, { minIdleSeconds: this.p.minIdleSeconds });
    if (candidates.length === 0) return { closed: 0 };
    const states = new Map<string, Promise<RunState>>();
    const stateOf = (workflowId: string) => {
      let s = states.get(workflowId);
      if (!s) states.set(workflowId, (s = this.runState(workflowId)));
      return s;
    };
    // Per case: every run holding it must be closed, and known to be.
    const byCase = new Map<number, { experimentId: number; workflowIds: string[] }>();
    for (const c of candidates) {
      const entry = byCase.get(c.runCaseId) ?? { experimentId: c.experimentId, workflowIds: [] };
      entry.workflowIds.push(c.workflowId);
      byCase.set(c.runCaseId, entry);
    }
    /** (workflow of the last closed run, status) → cases to close with it. */
    const toClose = new Map<
      string,
      { workflowId: string; experimentId: number; status: string; ids: number[] }
    >();
    for (const [runCaseId, { experimentId, workflowIds }] of byCase) {
      const runStates = await Promise.all(workflowIds.map(stateOf));
      if (!runStates.every((s) => 'open' in s && !s.open)) continue;
      const workflowId = workflowIds[workflowIds.length - 1] as string;
      const status = (runStates[runStates.length - 1] as { status: string }).status;
      const key = `${workflowId}\n${status}`;
      const group = toClose.get(key) ?? { workflowId, experimentId, status, ids: [] };
      group.ids.push(runCaseId);
      toClose.set(key, group);
    }
    let closed = 0;
    for (const g of toClose.values()) {
      const canceled = g.status === 'TERMINATED' || g.status === 'CANCELLED';
      const n = await closeOrphanedCases(pool, {
        workflowId: g.workflowId,
        experimentId: g.experimentId,
        runCaseIds: g.ids,
        status: canceled ? 'canceled' : 'failed',
        reason: `E_RUN_CLOSED_UNFINISHED: workflow ${g.workflowId} is ${g.status.toLowerCase()}`,
        resultEvents: this.p.resultEvents,
      });
      closed += n;
      if (n > 0)
        log.warn(
          {
            code: 'E_RUN_CLOSED_UNFINISHED',
            workflow_id: g.workflowId,
            experiment_id: g.experimentId,
            workflow_status: g.status,
            closed: n,
          },
          'a closed run left active cases; they are closed now',
        );
    }
    return { closed };
  }

  private async runState(workflowId: string): Promise<RunState> {
    try {
      // Without a run id: the newest run of a continue-as-new chain, open while the chain goes on.
      const d = await this.p.client.workflow.getHandle(workflowId).describe();
      return isOpenWorkflowState(d.status.name) ? { open: true } : { open: false, status: d.status.name };
    } catch (err) {
      return { unknown: err instanceof WorkflowNotFoundError ? 'not found' : errorText(err) };
    }
  }

  /** Sweeps every `intervalSeconds` (the first one after a full interval) until stop(). */
  start(intervalSeconds: number): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (this.running) return;
      this.running = this.sweep()
        .catch((err: unknown) =>
          this.p.log.warn(
            { code: 'E_RUN_RECONCILER_FAILED', err: errorText(err) },
            'run reconciler sweep failed',
          ),
        )
        .finally(() => (this.running = undefined));
    }, intervalSeconds * 1000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
