import type { Logger } from '../logger';
import { errorDetail, type DockerSandbox } from './docker-sandbox';

export interface OrphanReaperParams {
  sandbox: DockerSandbox;
  log: Logger;
  /** Younger containers are left alone: their activity may not have heartbeated its container id yet. */
  minAgeSeconds: number;
  /** Asked per old container; an error counts as "still wanted" so a flaky check never kills a live case. */
  isStillWanted: (labels: Record<string, string>) => Promise<boolean>;
}

/**
 * Removes case containers nobody owns any more (worker crash, lost activity), on worker start and
 * periodically. Only ever looks at containers labelled io.agentbench.managed=true.
 */
export class OrphanReaper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(private readonly p: OrphanReaperParams) {}

  async sweep(): Promise<{ removed: string[]; kept: number }> {
    const { sandbox, log, minAgeSeconds, isStillWanted } = this.p;
    const removed: string[] = [];
    let kept = 0;
    const now = Date.now();
    const containers = await sandbox.listManagedContainers();
    for (const c of containers) {
      const ageSeconds = (now - c.createdAt.getTime()) / 1000;
      let orphan = false;
      if (ageSeconds >= minAgeSeconds) {
        try {
          orphan = !(await isStillWanted(c.labels));
        } catch (err) {
          log.warn({ container: c.name, err: errorDetail(err) }, 'orphan check failed; keeping container');
        }
      }
      if (!orphan) {
        kept++;
        continue;
      }
      try {
        await sandbox.remove(c.id);
        removed.push(c.name);
        log.info(
          {
            code: 'SANDBOX_ORPHAN_REMOVED',
            container: c.name,
            container_id: c.id,
            age_s: Math.round(ageSeconds),
            state: c.state,
          },
          'orphaned case container removed',
        );
      } catch (err) {
        kept++;
        log.warn({ container: c.name, err: errorDetail(err) }, 'could not remove orphaned container');
      }
    }
    // Case file directories of containers that are gone (their worker died before removing them).
    const live = new Set(containers.filter((c) => !removed.includes(c.name)).map((c) => c.name));
    const dirs = await sandbox.caseFiles.sweep(live, minAgeSeconds).catch((err: unknown) => {
      log.warn({ err: errorDetail(err) }, 'could not sweep case file directories');
      return [];
    });
    if (dirs.length > 0) log.info({ code: 'SANDBOX_ORPHAN_FILES_REMOVED', count: dirs.length }, 'orphaned case file directories removed');
    return { removed, kept };
  }

  /** Sweeps every intervalSeconds (call sweep() for one now); a sweep never overlaps the previous one. */
  start(intervalSeconds: number): void {
    if (this.timer) return;
    const tick = () => {
      if (this.running) return;
      this.running = this.sweep()
        .catch((err: unknown) => this.p.log.warn({ err: errorDetail(err) }, 'orphan sweep failed'))
        .finally(() => {
          this.running = undefined;
        });
    };
    this.timer = setInterval(tick, intervalSeconds * 1000);
    // The reaper must not keep a worker process alive on its own.
    this.timer.unref();
  }

  /** Stops the schedule and waits for a sweep in progress. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
