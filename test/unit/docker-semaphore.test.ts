import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Semaphore } from '../../src/docker/semaphore';

/** A promise plus its resolver, to hold a task open until the test lets it finish. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

describe('Semaphore', () => {
  test('never runs more than max tasks at once and reports inUse/waiting', async () => {
    const sem = new Semaphore(2);
    const gates = [gate(), gate(), gate(), gate()];
    let running = 0;
    let peak = 0;
    const tasks = gates.map((g, i) =>
      sem.run(async () => {
        peak = Math.max(peak, ++running);
        await g.opened;
        running--;
        return i;
      }),
    );
    await Promise.resolve();
    assert.deepEqual({ inUse: sem.inUse, waiting: sem.waiting }, { inUse: 2, waiting: 2 });
    for (const g of gates) g.open();
    assert.deepEqual(await Promise.all(tasks), [0, 1, 2, 3]);
    assert.equal(peak, 2);
    assert.deepEqual({ inUse: sem.inUse, waiting: sem.waiting }, { inUse: 0, waiting: 0 });
  });

  test('waiters get the slot in FIFO order', async () => {
    const sem = new Semaphore(1);
    const first = gate();
    const order: string[] = [];
    const holder = sem.run(() => first.opened);
    const waiters = ['a', 'b', 'c'].map((name) => sem.run(async () => void order.push(name)));
    assert.equal(sem.waiting, 3);
    first.open();
    await Promise.all([holder, ...waiters]);
    assert.deepEqual(order, ['a', 'b', 'c']);
  });

  test('a failing task releases its slot and its error reaches the caller', async () => {
    const sem = new Semaphore(1);
    await assert.rejects(
      sem.run(async () => {
        throw new Error('boom');
      }),
      /boom/,
    );
    assert.equal(sem.inUse, 0);
    assert.equal(await sem.run(async () => 'next'), 'next');
  });

  test('rejects a non-positive or fractional max', () => {
    assert.throws(() => new Semaphore(0), RangeError);
    assert.throws(() => new Semaphore(1.5), RangeError);
  });
});
