import { readdirSync, readFileSync } from 'node:fs';

const TICKS_PER_SECOND = 100;

interface ProcessTimes {
  name: string;
  parent: number;
  /** Jiffies since boot at which the process started: tells a reused pid from the same process. */
  startedAt: string;
  /** Its own utime+stime plus cutime+cstime (what its exited, waited-for children used), in seconds. */
  seconds: number;
  /** cutime+cstime alone, in seconds. */
  reapedSeconds: number;
}

export type CpuSnapshot = Map<number, ProcessTimes>;

/** Every live process's CPU seconds so far (/proc; Linux only, empty elsewhere). */
export function cpuSnapshot(): CpuSnapshot {
  const snapshot: CpuSnapshot = new Map();
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return snapshot;
  }
  for (const pid of pids) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue; // exited between the listing and the read
    }
    const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
    // Fields after the command; field N of proc(5) is fields[N - 3].
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = (indexes: number[]) => indexes.reduce((sum, i) => sum + Number(fields[i]), 0);
    snapshot.set(Number(pid), {
      name,
      parent: Number(fields[1]),
      startedAt: fields[19] ?? '',
      seconds: ticks([11, 12, 13, 14]) / TICKS_PER_SECOND,
      reapedSeconds: ticks([13, 14]) / TICKS_PER_SECOND,
    });
  }
  return snapshot;
}

function sameProcess(a: ProcessTimes | undefined, b: ProcessTimes | undefined): boolean {
  return a !== undefined && b !== undefined && a.startedAt === b.startedAt;
}

/**
 * CPU seconds used between two snapshots, by command name; never negative.
 *
 * A plain difference of the sums of live processes went negative when Postgres backends exited
 * during a round (their past vanished from the second sum). Per process instead: a process alive
 * in both counts its growth, a new one all it used. A process that exited in between was reaped
 * by its parent, whose cutime then grew by everything the child ever used — so the child's CPU
 * before the first snapshot is taken back off that parent (at most what the parent's cutime grew
 * by, in case it never got it). Missed: what exited children of vanished parents used.
 */
export function cpuSecondsByName(before: CpuSnapshot, after: CpuSnapshot): Map<string, number> {
  const reapedGrowth = new Map<number, number>();
  for (const [pid, now] of after) {
    const then = before.get(pid);
    if (sameProcess(then, now))
      reapedGrowth.set(pid, now.reapedSeconds - (then as ProcessTimes).reapedSeconds);
  }
  for (const [pid, then] of before) {
    if (sameProcess(then, after.get(pid))) continue;
    const growth = reapedGrowth.get(then.parent);
    if (growth === undefined) continue; // its parent is gone too (or was never seen)
    reapedGrowth.set(then.parent, growth - Math.min(growth, then.seconds));
  }
  const byName = new Map<string, number>();
  for (const [pid, now] of after) {
    const then = before.get(pid);
    let used = now.seconds;
    if (sameProcess(then, now)) {
      const own =
        now.seconds -
        now.reapedSeconds -
        ((then as ProcessTimes).seconds - (then as ProcessTimes).reapedSeconds);
      used = Math.max(0, own) + Math.max(0, reapedGrowth.get(pid) ?? 0);
    }
    byName.set(now.name, (byName.get(now.name) ?? 0) + used);
  }
  return byName;
}
