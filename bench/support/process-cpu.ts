import { readdirSync, readFileSync } from 'node:fs';

const TICKS_PER_SECOND = 100;

interface ProcessTimes {
  name: string;
  /** Jiffies since boot at which the process started: tells a reused pid from the same process. */
  startedAt: string;
  /** Its own utime+stime plus cutime+cstime (what its exited, waited-for children used), in seconds. */
  seconds: number;
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
    const ticks = [11, 12, 13, 14].reduce((sum, i) => sum + Number(fields[i]), 0);
    snapshot.set(Number(pid), { name, startedAt: fields[19] ?? '', seconds: ticks / TICKS_PER_SECOND });
  }
  return snapshot;
}

/**
 * CPU seconds used between two snapshots, by command name. Per process, so a process that exits
 * in between never subtracts its past (a plain sum of live processes went negative when Postgres
 * backends exited during a round); what it used goes to its parent's reaped-children time (the
 * postmaster waits for its backends). Missed: processes whose parent never waits for them.
 */
export function cpuSecondsByName(before: CpuSnapshot, after: CpuSnapshot): Map<string, number> {
  const byName = new Map<string, number>();
  for (const [pid, now] of after) {
    const then = before.get(pid);
    const used = then && then.startedAt === now.startedAt ? now.seconds - then.seconds : now.seconds;
    byName.set(now.name, (byName.get(now.name) ?? 0) + used);
  }
  return byName;
}
