import type { Logger } from '../logger';
import type { DockerSandbox } from './docker-sandbox';
import { errorDetail } from './errors';
import { LABELS } from './labels';

/**
 * What the owner check says of one container. `unknown` (the check could not answer: Temporal or
 * Postgres down, a timeout) keeps the container until a later sweep can tell: the reaper fails
 * closed, because removing a live case's container kills its agent, while an orphan kept one more
 * interval only costs its resources that long.
 */
export type OwnershipVerdict =
  { verdict: 'wanted' } | { verdict: 'orphan'; reason: string } | { verdict: 'unknown'; reason: string };

export interface OrphanReaperParams {
  sandbox: DockerSandbox;
  log: Logger;
  /** Only containers labelled with this deployment (LABELS.deployment) are judged. */
  deploymentId: string;
  /** Younger containers are left alone: their activity may not have heartbeated its container id yet. */
  minAgeSeconds: number;
  /** Asked per old container of our deployment; a throw or a timeout counts as `unknown`. */
  judge: (
    labels: Record<string, string>,
    container: { id: string; name: string },
  ) => Promise<OwnershipVerdict>;
  /** Per container; past it the verdict is `unknown`. */
  judgeTimeoutMs?: number;
}

export interface SweepResult {
  removed: string[];
  kept: number;
  /** Containers kept because their owner check could not answer. */
  unknown: number;
  /** Managed containers of other deployments (or of none), never judged. */
  foreign: number;
}

const DEFAULT_JUDGE_TIMEOUT_MS = 15_000;

/**
 * Removes case containers nobody owns any more (worker crash, lost activity), on worker start and
 * periodically. Only ever looks at containers labelled io.agentbench.managed=true, and only judges
 * those of its own deployment: another deployment sharing the Docker host (or a test run) answers
 * to another database and Temporal namespace, where our check would call its live cases orphans.
 * A managed container without a deployment label is left alone for the same reason: it was made
 * by a release before the label existed or by something else, and nobody can tell whose it is
 * (remove such leftovers by hand: `docker ps -a --filter label=io.agentbench.managed=true`).
 */
export class OrphanReaper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(private readonly p: OrphanReaperParams) {}

  async sweep(): Promise<SweepResult> {
    const { sandbox, log, minAgeSeconds, deploymentId } = this.p;
    const removed: string[] = [];
    let kept = 0;
    let unknown = 0;
    let foreign = 0;
    const now = Date.now();
    const containers = await sandbox.listManagedContainers();
    for (const c of containers) {
      if (c.labels[LABELS.deployment] !== deploymentId) {
        foreign++;
        continue;
      }
      const ageSeconds = (now - c.createdAt.getTime()) / 1000;
      if (ageSeconds < minAgeSeconds) {
        kept++;
        continue;
      }
      const judged = await this.judge(c.labels, c);
      if (judged.verdict !== 'orphan') {
        kept++;
        if (judged.verdict === 'unknown') {
          unknown++;
          log.warn(
            {
              code: 'SANDBOX_ORPHAN_CHECK_UNKNOWN',
              container: c.name,
              container_id: c.id,
              reason: judged.reason,
            },
            'cannot tell whether the case container is still wanted; keeping it until the next sweep',
          );
        }
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
            reason: judged.reason,
          },
          'orphaned case container removed',
        );
      } catch (err) {
        kept++;
        log.warn({ container: c.name, err: errorDetail(err) }, 'could not remove orphaned container');
      }
    }
    // Case file directories of containers that are gone (their worker died before removing them).
    // Every deployment's containers count as live here: the directory root is per host, not ours.
    const live = new Set(containers.filter((c) => !removed.includes(c.name)).map((c) => c.name));
    const dirs = await sandbox.caseFiles.sweep(live, minAgeSeconds).catch((err: unknown) => {
      log.warn({ err: errorDetail(err) }, 'could not sweep case file directories');
      return [];
    });
    if (dirs.length > 0)
      log.info(
        { code: 'SANDBOX_ORPHAN_FILES_REMOVED', count: dirs.length },
        'orphaned case file directories removed',
      );
    return { removed, kept, unknown, foreign };
  }

  private async judge(
    labels: Record<string, string>,
    container: { id: string; name: string },
  ): Promise<OwnershipVerdict> {
    const timeoutMs = this.p.judgeTimeoutMs ?? DEFAULT_JUDGE_TIMEOUT_MS;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<OwnershipVerdict>((resolve) => {
      timer = setTimeout(
        () => resolve({ verdict: 'unknown', reason: `owner check timed out after ${timeoutMs}ms` }),
        timeoutMs,
      );
    });
    try {
      return await Promise.race([
        this.p.judge(labels, container).catch((err: unknown) => ({
          verdict: 'unknown' as const,
          reason: errorDetail(err),
        })),
        timeout,
      ]);
    } finally {
      clearTimeout(timer);
    }
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
