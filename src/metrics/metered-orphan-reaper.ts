import { OrphanReaper, type OrphanReaperParams, type SweepResult } from '../docker/orphan-reaper';
import type { WorkerMetrics } from './orchestrator-metrics';

/**
 * The orphan reaper, counting what each sweep removed. `start()` schedules `this.sweep()`, so the
 * periodic sweeps are counted too, without the reaper knowing about metrics.
 */
export class MeteredOrphanReaper extends OrphanReaper {
  constructor(
    params: OrphanReaperParams,
    private readonly metrics: WorkerMetrics,
  ) {
    super(params);
  }

  override async sweep(): Promise<SweepResult> {
    const result = await super.sweep();
    this.metrics.orphansRemoved(result.removed.length);
    return result;
  }
}
