import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  getExperimentQueueState,
  refreshExperiment,
  withTransaction,
} from '../../src/db/experiment-repository';
import { persistCaseResult, transitionCaseStatus } from '../../src/db/run-case-repository';
import { createTestDatabase, seedExperiment, setCaseStatuses, type TestDatabase } from '../support/database';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db.drop();
});

interface ExperimentRow {
  queue_status: string;
  started_at: Date | null;
  finished_at: Date | null;
  updated_at: Date;
}

async function experiment(id: number): Promise<ExperimentRow> {
  const { rows } = await db.pool.query<ExperimentRow>(
    'SELECT queue_status, started_at, finished_at, updated_at FROM experiments WHERE id = $1',
    [id],
  );
  assert.ok(rows[0]);
  return rows[0];
}

const refresh = (experimentId: number) => withTransaction(db.pool, (c) => refreshExperiment(c, experimentId));

/** Seeds one run case per given status and refreshes. */
async function refreshedWith(statuses: string[], queueStatus = 'queued') {
  const seed = await seedExperiment(db.pool, { cases: statuses.length, queueStatus });
  for (const [i, s] of statuses.entries()) await setCaseStatuses(db.pool, [seed.runCaseIds[i] as number], s);
  const returned = await refresh(seed.experimentId);
  return { seed, returned, row: await experiment(seed.experimentId) };
}

describe('refreshExperiment (CONTRACT §3.4)', () => {
  const cases: Array<[string[], string]> = [
    [[], 'idle'],
    [['pending'], 'consuming'],
    [['queued', 'success'], 'consuming'],
    [['running', 'failed'], 'consuming'],
    [['trajectory'], 'consuming'],
    [['scoring', 'success'], 'consuming'],
    [['success', 'success'], 'done'],
    [['failed', 'timeout'], 'failed'],
    [['success', 'failed'], 'done'],
    [['success', 'timeout', 'canceled'], 'done'],
    [['canceled', 'canceled'], 'done'],
    [['canceled', 'failed'], 'failed'],
  ];
  for (const [statuses, expected] of cases) {
    test(`[${statuses.join(', ')}] → ${expected}`, async () => {
      const { returned, row } = await refreshedWith(statuses);
      assert.equal(returned, expected);
      assert.equal(row.queue_status, expected);
      assert.equal(row.started_at !== null, expected === 'consuming', 'started_at only set while consuming');
      assert.equal(row.finished_at !== null, expected === 'done' || expected === 'failed');
    });
  }

  test('counts only is_latest rows', async () => {
    const seed = await seedExperiment(db.pool, { cases: 2 });
    const [superseded, latest] = seed.runCaseIds as [number, number];
    await setCaseStatuses(db.pool, [superseded], 'running');
    await setCaseStatuses(db.pool, [latest], 'success');
    await db.pool.query('UPDATE run_cases SET is_latest = FALSE WHERE id = $1', [superseded]);
    assert.equal(await refresh(seed.experimentId), 'done');
  });

  test('keeps test_case while still maintaining started_at and finished_at', async () => {
    const seed = await seedExperiment(db.pool, { cases: 1, queueStatus: 'test_case' });
    const runCaseId = seed.runCaseIds[0] as number;
    await transitionCaseStatus(db.pool, { experimentId: seed.experimentId, runCaseId, to: 'running' });
    const running = await experiment(seed.experimentId);
    assert.equal(running.queue_status, 'test_case');
    assert.ok(running.started_at);
    assert.equal(running.finished_at, null);

    await setCaseStatuses(db.pool, [runCaseId], 'success');
    assert.equal(await refresh(seed.experimentId), 'test_case');
    const done = await experiment(seed.experimentId);
    assert.equal(done.queue_status, 'test_case');
    assert.ok(done.finished_at);
  });

  test('leaves a manual_terminated experiment completely alone', async () => {
    const seed = await seedExperiment(db.pool, { cases: 1, queueStatus: 'manual_terminated' });
    const before = await experiment(seed.experimentId);
    const changed = await transitionCaseStatus(db.pool, {
      experimentId: seed.experimentId,
      runCaseId: seed.runCaseIds[0] as number,
      to: 'running',
    });
    assert.equal(changed, true, 'the case write itself is not blocked');
    assert.equal(await refresh(seed.experimentId), 'manual_terminated');
    assert.deepEqual(await experiment(seed.experimentId), before);
  });

  test('sets finished_at once and moves it only when the status changes', async () => {
    const { seed, row: first } = await refreshedWith(['success', 'failed']);
    assert.equal(first.queue_status, 'done');
    assert.ok(first.finished_at);

    await refresh(seed.experimentId);
    const again = await experiment(seed.experimentId);
    assert.deepEqual(again.finished_at, first.finished_at);
    assert.ok(again.updated_at > first.updated_at);

    await setCaseStatuses(db.pool, [seed.runCaseIds[0] as number], 'failed');
    assert.equal(await refresh(seed.experimentId), 'failed');
    const failed = await experiment(seed.experimentId);
    assert.ok(failed.finished_at && failed.finished_at > first.finished_at);
  });

  test('a missing experiment refreshes to null', async () => {
    assert.equal(await refresh(987_654_321), null);
  });

  test('concurrent final persists of every case leave the experiment finished', async () => {
    const seed = await seedExperiment(db.pool, { cases: 24 });
    await Promise.all(
      seed.runCaseIds.map((runCaseId) =>
        persistCaseResult(db.pool, {
          runCaseId,
          experimentId: seed.experimentId,
          status: 'success',
          agentTrajectory: [],
          agentOutput: 'ok',
          latencyMs: 1,
          logs: '',
          errorMessage: null,
          runtimeSnapshot: {},
          inspectEvalId: null,
          inspectSampleId: null,
          usage: {},
          scores: null,
        }),
      ),
    );
    const row = await experiment(seed.experimentId);
    assert.equal(row.queue_status, 'done');
    assert.ok(row.finished_at);
  });
});

describe('getExperimentQueueState', () => {
  test('reads queue_status and queue_message_id', async () => {
    const seed = await seedExperiment(db.pool, { cases: 1 });
    await db.pool.query(`UPDATE experiments SET queue_message_id = 'msg-1' WHERE id = $1`, [
      seed.experimentId,
    ]);
    assert.deepEqual(await getExperimentQueueState(db.pool, seed.experimentId), {
      queueStatus: 'queued',
      queueMessageId: 'msg-1',
    });
  });

  test('a deleted or missing experiment reads as nulls', async () => {
    const seed = await seedExperiment(db.pool, { cases: 1 });
    await db.pool.query('UPDATE experiments SET deleted_at = now() WHERE id = $1', [seed.experimentId]);
    const nothing = { queueStatus: null, queueMessageId: null };
    assert.deepEqual(await getExperimentQueueState(db.pool, seed.experimentId), nothing);
    assert.deepEqual(await getExperimentQueueState(db.pool, 987_654_321), nothing);
  });
});
