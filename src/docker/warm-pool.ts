import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import { mkdir, readdir, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '../logger';
import type { CaseContainerSpec, DockerSandbox, StartedContainer } from './docker-sandbox';
import { errorDetail } from './errors';
import type { IsolatedNetwork } from './isolated-network';
import { LABELS } from './labels';
import type { OwnershipVerdict } from './orphan-reaper';

/**
 * What a warm container is created from: a case's container spec without anything of its case
 * (name, env, files, case labels), plus the network of its own it gets, if any. Equal templates
 * are one pool; a case only ever gets a container made from its own spec's template.
 */
export interface WarmSandboxTemplate {
  container: Omit<CaseContainerSpec, 'name' | 'env' | 'files' | 'labels' | 'network' | 'hostAddress'>;
  /** A network the container joins as it is (runtime spec docker_network); undefined = Docker's default. */
  network: string | undefined;
  /** A network of the container's own, made with it (and then the case's: see openCaseNetwork). */
  ownNetwork: { sealed: boolean; ports: number[] } | undefined;
}

/** A warm container one case claimed: its only user, ever. */
export interface WarmSandbox {
  readonly name: string;
  /** The case's own network, made with the container; from the claim on the case's to close and remove. */
  readonly network: IsolatedNetwork | undefined;
  /**
   * Hands the container to the case (DockerSandbox.assignCase). If that fails the container is
   * removed and a fresh one created from `spec` instead (on the same network): a case never fails
   * because its warm container did.
   */
  start(spec: CaseContainerSpec): Promise<StartedContainer>;
  /** Removes the container when the case ended before start() (its network goes with the case's). */
  discard(): Promise<void>;
}

export interface WarmPoolDeps {
  sandbox: Pick<DockerSandbox, 'createIdle' | 'assignCase' | 'createAndStart' | 'remove'>;
  /** The worker's DOCKER_MAX_LIVE_CONTAINERS slots: case containers alive now. */
  liveContainers: { readonly inUse: number };
  maxLiveContainers: number;
  /** SANDBOX_WARM_POOL_SIZE: warm containers kept per template while its cases keep coming. */
  size: number;
  /** SANDBOX_WARM_POOL_IDLE_SECONDS × 1000: a template without a claim this long is drained. */
  idleMs: number;
  /** warmPoolOwner(): put on every warm container and network (LABELS.pool). */
  owner: string;
  /** A network of a warm container's own (createIsolatedNetwork), labelled with `labels`. */
  createNetwork(p: {
    name: string;
    sealed: boolean;
    ports: number[];
    labels: Record<string, string>;
  }): Promise<IsolatedNetwork>;
  log: Logger;
}

interface WarmEntry {
  key: string;
  container: StartedContainer;
  network: IsolatedNetwork | undefined;
}

interface Wanted {
  template: WarmSandboxTemplate;
  lastClaimAt: number;
  /** Warm containers of this template being created now. */
  creating: number;
  /** After a failed create, none is tried again before this (a missing image must not loop). */
  retryAt: number;
}

/** Creates in parallel at most: a create + start is dockerd and runc CPU, taken from the running cases. */
const REFILL_PARALLELISM = 2;
const CREATE_FAILURE_BACKOFF_MS = 30_000;
const MAX_DRAIN_TICK_MS = 5_000;

/**
 * Warm sandboxes (issue 18): per worker and per template, a few containers already created and
 * started — start command running, no case in them — so a case's container phase begins with its
 * exec instead of a create + start (and its network's create). A case claims one (claim() is
 * synchronous: two cases never get the same container), gets its files, env, gateway and OTel
 * token then, and the container is removed after the case as any other: never reused.
 *
 * Size: SANDBOX_WARM_POOL_SIZE per template while claims for it keep coming, 0 once none came for
 * the idle time (and before the first: a miss is a cold create, and starts the refill); refilled in
 * the background after each claim. Bounded with the case containers: case containers alive + warm
 * ones (idle, being made, claimed) stay within DOCKER_MAX_LIVE_CONTAINERS, so a busy worker's pool
 * gives way to its cases (a cold case evicts idle containers of other templates to stay within it).
 * Warm containers carry LABELS.pool (their owner) and no case labels: they are never counted as a
 * case's, and the reaper removes them once their owner process is gone (warmPoolOwnership).
 */
export class WarmPool {
  private size: number;
  private readonly idle = new Map<string, WarmEntry[]>();
  private readonly wanted = new Map<string, Wanted>();
  /** Claimed, not yet handed to the case or discarded: neither idle nor a case container (in a slot) yet. */
  private readonly claimed = new Set<string>();
  private refilling: Promise<void> | undefined;
  private refillAgain = false;
  private closed = false;
  private readonly timer: NodeJS.Timeout;
  /** Removals in progress (drain, eviction, close): close() waits for them. */
  private readonly removals = new Set<Promise<void>>();

  constructor(private readonly deps: WarmPoolDeps) {
    this.size = deps.size;
    this.timer = setInterval(
      () => this.drainIdle(),
      Math.max(50, Math.min(deps.idleMs / 2, MAX_DRAIN_TICK_MS)),
    );
    // The pool must not keep a worker process alive on its own.
    this.timer.unref();
  }

  /** Warm containers ready to be claimed, all templates. */
  get idleCount(): number {
    let n = 0;
    for (const list of this.idle.values()) n += list.length;
    return n;
  }

  /** Changes SANDBOX_WARM_POOL_SIZE of a running pool (0 drains it); bench/sandbox-overhead compares both in one worker. */
  setSize(size: number): void {
    this.size = size;
    if (size === 0) for (const key of [...this.idle.keys()]) this.drainKey(key);
    else this.refill();
  }

  /** A warm container of `template`, or undefined (then the case creates its own, as without a pool). */
  claim(template: WarmSandboxTemplate): WarmSandbox | undefined {
    if (this.closed || this.size === 0) return undefined;
    const key = templateKey(template);
    const wanted = this.wanted.get(key);
    if (wanted) wanted.lastClaimAt = Date.now();
    else this.wanted.set(key, { template, lastClaimAt: Date.now(), creating: 0, retryAt: 0 });
    const entry = this.idle.get(key)?.shift();
    if (entry) this.claimed.add(entry.container.containerId);
    // The cold container this case creates instead counts against the bound too.
    else this.evictBeyond(this.deps.maxLiveContainers - 1);
    this.refill();
    return entry ? this.handOut(entry) : undefined;
  }

  /** Stops refilling and removes every idle warm container (the worker's shutdown). */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.refilling;
    for (const key of [...this.idle.keys()]) this.drainKey(key);
    await Promise.all(this.removals);
  }

  private held(): number {
    let creating = 0;
    for (const w of this.wanted.values()) creating += w.creating;
    return this.idleCount + creating + this.claimed.size;
  }

  /** Whether the container is one of this pool's, idle or claimed and not yet its case's (the reaper asks). */
  holds(containerId: string): boolean {
    if (this.claimed.has(containerId)) return true;
    for (const list of this.idle.values())
      if (list.some((e) => e.container.containerId === containerId)) return true;
    return false;
  }

  private handOut(entry: WarmEntry): WarmSandbox {
    let state: 'claimed' | 'started' | 'discarded' = 'claimed';
    const { sandbox, log } = this.deps;
    const id = entry.container.containerId;
    const settle = (to: 'started' | 'discarded') => {
      if (state !== 'claimed') return false;
      state = to;
      return true;
    };
    return {
      name: entry.container.name,
      network: entry.network,
      start: async (spec) => {
        // Called again (the first call's fallback met a Docker outage): a fresh container, as that fallback.
        if (!settle('started')) return sandbox.createAndStart(spec);
        try {
          return await sandbox.assignCase(entry.container, spec);
        } catch (err) {
          log.warn(
            { code: 'SANDBOX_WARM_CLAIM_FAILED', container: entry.container.name, err: errorDetail(err) },
            'the warm container could not take its case; creating a fresh one',
          );
          await sandbox.remove(id, { graceful: false }).catch(() => undefined);
          return sandbox.createAndStart(spec);
        } finally {
          // From here on it is a case container (sandbox.hasCase), in one of the case slots.
          this.claimed.delete(id);
        }
      },
      discard: async () => {
        if (!settle('discarded')) return;
        this.claimed.delete(id);
        await this.removeEntry({ ...entry, network: undefined });
      },
    };
  }

  private refill(): void {
    if (this.closed) return;
    if (this.refilling) {
      this.refillAgain = true;
      return;
    }
    const workers = Array.from({ length: REFILL_PARALLELISM }, () => this.refillWorker());
    this.refilling = Promise.all(workers).then(() => {
      this.refilling = undefined;
      if (this.refillAgain) {
        this.refillAgain = false;
        this.refill();
      }
    });
  }

  private async refillWorker(): Promise<void> {
    for (;;) {
      const next = this.nextToCreate();
      if (next === undefined) return;
      const [key, wanted] = next;
      wanted.creating++;
      try {
        const entry = await this.create(key, wanted.template);
        if (this.closed || this.wanted.get(key) !== wanted || this.size === 0) void this.removeEntry(entry);
        else this.idle.set(key, [...(this.idle.get(key) ?? []), entry]);
      } catch (err) {
        wanted.retryAt = Date.now() + CREATE_FAILURE_BACKOFF_MS;
        this.deps.log.warn(
          { code: 'SANDBOX_WARM_CREATE_FAILED', err: errorDetail(err) },
          'could not create a warm container; its cases create their own meanwhile',
        );
      } finally {
        wanted.creating--;
      }
    }
  }

  /** The template most short of warm containers, if the bound leaves room for one more. */
  private nextToCreate(): [string, Wanted] | undefined {
    if (this.closed || this.deps.liveContainers.inUse + this.held() >= this.deps.maxLiveContainers)
      return undefined;
    const now = Date.now();
    let best: [string, Wanted, number] | undefined;
    for (const [key, wanted] of this.wanted) {
      if (wanted.retryAt > now) continue;
      const short = this.size - (this.idle.get(key)?.length ?? 0) - wanted.creating;
      if (short > 0 && (best === undefined || short > best[2])) best = [key, wanted, short];
    }
    return best && [best[0], best[1]];
  }

  private async create(key: string, template: WarmSandboxTemplate): Promise<WarmEntry> {
    const { sandbox, owner } = this.deps;
    const name = `agentbench-warm-${randomBytes(6).toString('hex')}`;
    const labels = { [LABELS.pool]: owner };
    const own = template.ownNetwork;
    const network = own ? await this.deps.createNetwork({ name, ...own, labels }) : undefined;
    try {
      const container = await sandbox.createIdle({
        ...template.container,
        name,
        labels: { ...labels, [LABELS.createdAt]: new Date().toISOString() },
        network: network?.name ?? template.network,
        hostAddress: network?.gatewayIp,
      });
      return { key, container, network };
    } catch (err) {
      await network?.remove().catch(() => undefined);
      throw err;
    }
  }

  /** Drains the templates nobody claimed for the idle time. */
  private drainIdle(): void {
    const cutoff = Date.now() - this.deps.idleMs;
    for (const [key, wanted] of this.wanted) {
      if (wanted.lastClaimAt > cutoff || wanted.creating > 0) continue;
      this.wanted.delete(key);
      this.drainKey(key);
    }
  }

  private drainKey(key: string): void {
    const entries = this.idle.get(key) ?? [];
    this.idle.delete(key);
    for (const entry of entries) void this.removeEntry(entry);
  }

  /** Removes idle containers, least recently wanted template first, until at most `limit` are held with the cases'. */
  private evictBeyond(limit: number): void {
    const keys = [...this.wanted].sort((a, b) => a[1].lastClaimAt - b[1].lastClaimAt).map(([k]) => k);
    for (const key of keys) {
      const list = this.idle.get(key) ?? [];
      while (list.length > 0 && this.deps.liveContainers.inUse + this.held() > limit) {
        const entry = list.shift();
        if (entry) void this.removeEntry(entry);
      }
    }
  }

  /** Never throws: what is left is the reaper's (its owner label tells it once this process is gone). */
  private removeEntry(entry: WarmEntry): Promise<void> {
    const removal = (async () => {
      try {
        await this.deps.sandbox.remove(entry.container.containerId, { graceful: false });
        await entry.network?.remove();
      } catch (err) {
        this.deps.log.warn(
          { code: 'SANDBOX_WARM_REMOVE_FAILED', container: entry.container.name, err: errorDetail(err) },
          'could not remove a warm container; the reaper will once this worker is gone',
        );
      }
    })();
    this.removals.add(removal);
    void removal.finally(() => this.removals.delete(removal));
    return removal;
  }
}

/** Keys of `value` sorted at every level: equal templates give equal keys whatever their key order. */
function templateKey(template: WarmSandboxTemplate): string {
  return JSON.stringify(template, (_key, value: unknown) =>
    value !== null && typeof value === 'object' && !Array.isArray(value)
      ? Object.fromEntries(Object.entries(value).sort(([a], [b]) => a.localeCompare(b)))
      : value,
  );
}

/**
 * This process as LABELS.pool says it: `host:pid namespace:pid:start time` (the namespace's inode,
 * the start time in clock ticks since boot, both from /proc): a later process that got the same pid,
 * or a process of another pid namespace (another pod on the node) with that pid, is not taken for it.
 */
export function warmPoolOwner(pid = process.pid): string {
  return `${hostname()}:${pidNamespace(pid) ?? 'unknown'}:${pid}:${processStartTime(pid) ?? 'unknown'}`;
}

function pidNamespace(pid: number): string | undefined {
  try {
    return /\[(\d+)\]/.exec(readlinkSync(`/proc/${pid}/ns/pid`))?.[1];
  } catch {
    return undefined;
  }
}

function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22; fields are counted after the command name, which is in parentheses and may hold spaces.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** How often a pool owner touches its liveness file, and when one untouched counts as its owner gone. */
const BEACON_INTERVAL_MS = 10_000;
export const BEACON_STALE_MS = 60_000;
/** Liveness files of owners gone that long are removed by the next pool that starts. */
const BEACON_FORGET_MS = 24 * 3600_000;
const BEACON_PREFIX = '.warm-owner-';

function beaconPath(dir: string, owner: string): string {
  return join(dir, `${BEACON_PREFIX}${createHash('sha256').update(owner).digest('hex').slice(0, 32)}`);
}

/**
 * A pool owner's liveness file, in the case files directory (on Kubernetes the node's, shared by
 * every worker pod there, the ones that share its Docker daemon): touched while the owner lives,
 * removed when its pool closes. How a worker in another pid namespace tells that a pool's owner is
 * gone, where /proc cannot.
 */
export class OwnerBeacon {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly dir: string,
    private readonly owner: string,
    private readonly intervalMs = BEACON_INTERVAL_MS,
  ) {}

  async start(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await this.touch();
    this.timer = setInterval(() => void this.touch().catch(() => undefined), this.intervalMs);
    this.timer.unref();
    const now = Date.now();
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      if (!name.startsWith(BEACON_PREFIX)) continue;
      const info = await stat(join(this.dir, name)).catch(() => null);
      if (info && now - info.mtimeMs > BEACON_FORGET_MS)
        await unlink(join(this.dir, name)).catch(() => undefined);
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await unlink(beaconPath(this.dir, this.owner)).catch(() => undefined);
  }

  private async touch(): Promise<void> {
    const file = beaconPath(this.dir, this.owner);
    const now = new Date();
    await utimes(file, now, now).catch(() => writeFile(file, `${this.owner}\n`));
  }
}

/**
 * The orphan reaper's judge, for warm containers too. One of this process's pool is wanted while
 * the pool holds it (idle or just claimed) or its case has it (until its removal: one that failed
 * is an orphan then). One of another process: wanted while that process lives (idle, it is its
 * pool's; claimed, its case runs there, and a case whose worker is gone is retried elsewhere with a
 * container of its own) — told by /proc in this pid namespace, else by the owner's liveness file in
 * `beaconDir` (fresh: alive; older than `staleMs`: gone). An owner with neither (a worker on another
 * host sharing the daemon, with a directory of its own) cannot be judged from here: `unknown`, kept
 * (its own host's workers reap it). Other containers go to `judge`.
 */
export function warmPoolOwnership(
  judge: (labels: Record<string, string>) => Promise<OwnershipVerdict>,
  opts: {
    self?: { owner: string; pool: Pick<WarmPool, 'holds'>; sandbox: Pick<DockerSandbox, 'hasCase'> };
    beaconDir?: string;
    staleMs?: number;
  } = {},
): (labels: Record<string, string>, container: { id: string }) => Promise<OwnershipVerdict> {
  const { self, beaconDir, staleMs = BEACON_STALE_MS } = opts;
  const here = warmPoolOwner().split(':');
  return async (labels, container) => {
    const owner = labels[LABELS.pool];
    if (owner === undefined) return judge(labels);
    if (self && owner === self.owner)
      return self.pool.holds(container.id) || self.sandbox.hasCase(container.id)
        ? { verdict: 'wanted' }
        : { verdict: 'orphan', reason: 'warm container neither in its pool nor with its case' };
    const [host, pidns, pid] = owner.split(':');
    if (
      host === here[0] &&
      pidns === here[1] &&
      pidns !== 'unknown' &&
      pid !== undefined &&
      /^\d+$/.test(pid)
    )
      return warmPoolOwner(Number(pid)) === owner
        ? { verdict: 'wanted' }
        : { verdict: 'orphan', reason: `its warm pool's worker (${owner}) is gone` };
    const touched =
      beaconDir === undefined ? null : await stat(beaconPath(beaconDir, owner)).catch(() => null);
    if (touched === null)
      return { verdict: 'unknown', reason: `warm container of a worker this host cannot check (${owner})` };
    if (Date.now() - touched.mtimeMs <= staleMs) return { verdict: 'wanted' };
    return {
      verdict: 'orphan',
      reason: `its warm pool's worker (${owner}) is gone: liveness file untouched for ${Math.round((Date.now() - touched.mtimeMs) / 1000)}s`,
    };
  };
}
