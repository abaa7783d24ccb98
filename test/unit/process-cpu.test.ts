import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpuSecondsByName, type CpuSnapshot } from '../../bench/support/process-cpu';

function proc(name: string, parent: number, startedAt: string, own: number, reaped: number) {
  return { name, parent, startedAt, seconds: own + reaped, reapedSeconds: reaped };
}

test('a backend exiting during a round counts what it used in the round, not its past', () => {
  // Postmaster 1; backend 2 used 5 s before the round and 1 s in it, then exited (reaped: the
  // postmaster's cutime grew by all 6 s); backend 3 started in the round and used 2 s.
  const before: CpuSnapshot = new Map([
    [1, proc('postgres', 0, 'a', 10, 0)],
    [2, proc('postgres', 1, 'b', 5, 0)],
  ]);
  const after: CpuSnapshot = new Map([
    [1, proc('postgres', 0, 'a', 10.5, 6)],
    [3, proc('postgres', 1, 'c', 2, 0)],
  ]);
  assert.equal(cpuSecondsByName(before, after).get('postgres'), 3.5);
});

test('never negative: an exited process whose parent never reaped its time, a reused pid', () => {
  const before: CpuSnapshot = new Map([
    [1, proc('postgres', 0, 'a', 10, 0)],
    [2, proc('postgres', 1, 'b', 5, 0)],
  ]);
  const after: CpuSnapshot = new Map([
    [1, proc('postgres', 0, 'a', 10.5, 0)],
    [2, proc('postgres', 1, 'reused', 0.25, 0)],
  ]);
  assert.equal(cpuSecondsByName(before, after).get('postgres'), 0.75);
});
