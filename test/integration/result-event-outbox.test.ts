import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { CaseFinishedPayload, RunFinishedPayload } from '../../src/domain/result-event';
import { cancelActiveCases, persistCaseResult, type CaseResultRow } from '../../src/db/run-case-repository';
import { cancelRunCases, failRunCases } from '../../src/db/run-control-repository';
import {
  countPendingEvents,
  prunePublishedEvents,
  recordRunEnd,
  relayPendingEvents,
} from '../../src/db/result-event-outbox';
import {
  createTestDatabase,
  setCaseStatuses,
  type SeededExperiment,
  type TestDatabase,
} from '../support/database';
import { seedStoredRun } from '../support/platform';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});

/** A stored run whose cases are all running. */
async function seededRun(cases: number): Promise<{ seeded: SeededExperiment; workflowId: string }> {
  const run = await seedStoredRun(db.pool, cases);
  await setCaseStatuses(db.pool, run.seeded.runCaseIds, 'running');
  return run;
}

function result(
  experimentId: number,
  runCaseId: number,
  overrides: Partial<CaseResultRow> = {},
): CaseResultRow {
  return {
    runCaseId,
    experimentId,
    status: 'success',
    agentTrajectory: [],
    agentOutput: { answer: '4' },
    latencyMs: 88,
    logs: 'logs',
    errorMessage: null,
    runtimeSnapshot: {},
    inspectEvalId: null,
    inspectSampleId: null,
    usage: {},
    scores: null,
    ...overrides,
  };
}

interface EventRow {
  event_type: string;
  subject: string;
  workflow_id: string | null;
  payload: CaseFinishedPayload & RunFinishedPayload;
}

async function eventsOf(experimentId: number): Promise<EventRow[]> {
  const { rows } = await db.pool.query<EventRow>(
    'SELECT event_type, subject, workflow_id, payload FROM agentbench_result_events WHERE experiment_id = $1 ORDER BY seq',
    [experimentId],
  );
  return rows;
}

const runEvents = (rows: EventRow[]) => rows.filter((r) => r.event_type === 'experiment_run.finished');
const caseEvents = (rows: EventRow[]) => rows.filter((r) => r.event_type === 'run_case.finished');

describe('result event outbox: one event per terminal transition, written with it', () => {
  test('each persisted case gets one run_case.finished; the last one closes the run', async () => {
    const { seeded, workflowId } = await seededRun(3);
    const [a, b, c] = seeded.runCaseIds as [number, number, number];
    const events = { workflowId };
    await persistCaseResult(
      db.pool,
      result(seeded.experimentId, a, {
        scores: [{ scorerKey: 'judge', evaluatorId: 0, score: 0.5, reason: 'half', rawResult: {} }],
      }),
      events,
    );
    await persistCaseResult(
      db.pool,
      result(seeded.experimentId, b, {
        status: 'failed',
        errorMessage: 'E_AGENT_EXIT_NON_ZERO: exit code 3',
      }),
      events,
    );
    assert.equal(runEvents(await eventsOf(seeded.experimentId)).length, 0, 'the run is still open');
    await persistCaseResult(
      db.pool,
      result(seeded.experimentId, c, { status: 'timeout', errorMessage: 'E_CASE_TIMEOUT: 180 s' }),
      events,
    );
    // A retried finalize (the row is no longer active) records nothing new.
    assert.equal(await persistCaseResult(db.pool, result(seeded.experimentId, c), events), false);

    const rows = await eventsOf(seeded.experimentId);
    assert.deepEqual(
      rows.map((r) => [r.event_type, r.subject]),
      [
        ['run_case.finished', String(a)],
        ['run_case.finished', String(b)],
        ['run_case.finished', String(c)],
        ['experiment_run.finished', workflowId],
      ],
    );
    const first = rows[0]?.payload as CaseFinishedPayload;
    assert.deepEqual(first.run, { id: workflowId, workflow_id: workflowId });
    assert.deepEqual(first.experiment, { id: seeded.experimentId });
    assert.equal(first.run_case.status, 'success');
    assert.equal(first.run_case.final_score, 0.5);
    assert.deepEqual(first.run_case.scores, [{ scorer_key: 'judge', score: 0.5 }]);
    assert.equal(first.run_case.latency_ms, 88);
    assert.match(first.run_case.finished_at ?? '', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const failed = rows[1]?.payload as CaseFinishedPayload;
    assert.equal(failed.run_case.error_code, 'E_AGENT_EXIT_NON_ZERO');
    assert.equal(failed.run_case.error_message, 'E_AGENT_EXIT_NON_ZERO: exit code 3');
    const run = rows[3]?.payload as RunFinishedPayload;
    assert.equal(run.run.status, 'done');
    assert.equal(run.run.reason, null);
    assert.deepEqual(run.run.cases, {
      total: 3,
      success: 1,
      failed: 1,
      timeout: 1,
      canceled: 0,
      unfinished: 0,
    });
  });

  test('cases finishing concurrently close the run exactly once', async () => {
    const { seeded, workflowId } = await seededRun(8);
    await Promise.all(
      seeded.runCaseIds.map((id) =>
        persistCaseResult(db.pool, result(seeded.experimentId, id), { workflowId }),
      ),
    );
    const rows = await eventsOf(seeded.experimentId);
    assert.equal(caseEvents(rows).length, 8);
    assert.equal(runEvents(rows).length, 1);
  });

  test('a cancel closes the run; a case the platform canceled itself gets its event then too', async () => {
    const { seeded, workflowId } = await seededRun(3);
    const [done, byPlatform] = seeded.runCaseIds as [number, number, number];
    await persistCaseResult(db.pool, result(seeded.experimentId, done), { workflowId });
    // The platform's terminate writes run_cases directly, past our functions.
    await db.pool.query(
      `UPDATE run_cases SET status = 'canceled', error_message = 'manual terminated by ops' WHERE id = $1`,
      [byPlatform],
    );
    const canceled = await cancelRunCases(db.pool, {
      workflowId,
      experimentId: seeded.experimentId,
      reason: 'canceled via Temporal',
      terminateExperiment: true,
    });
    assert.equal(canceled, 1);
    const rows = await eventsOf(seeded.experimentId);
    assert.deepEqual(
      caseEvents(rows)
        .map((r) => r.subject)
        .sort(),
      seeded.runCaseIds.map(String).sort(),
    );
    const platform = caseEvents(rows).find((r) => r.subject === String(byPlatform))
      ?.payload as CaseFinishedPayload;
    assert.equal(platform.run_case.status, 'canceled');
    assert.equal(platform.run_case.error_message, 'manual terminated by ops');
    const [run] = runEvents(rows);
    assert.equal((run?.payload as RunFinishedPayload).run.status, 'canceled');
  });

  test('a run that cannot start: every case failed, the run failed', async () => {
    const { seeded, workflowId } = await seededRun(2);
    await failRunCases(db.pool, {
      workflowId,
      experimentId: seeded.experimentId,
      errorMessage: 'E_DOCKER_PULL: nope',
    });
    const rows = await eventsOf(seeded.experimentId);
    assert.equal(caseEvents(rows).length, 2);
    for (const r of caseEvents(rows))
      assert.equal((r.payload as CaseFinishedPayload).run_case.error_code, 'E_DOCKER_PULL');
    assert.equal((runEvents(rows)[0]?.payload as RunFinishedPayload).run.status, 'failed');
  });

  test('a skipped run ends with a canceled run event and its cases untouched', async () => {
    const { seeded, workflowId } = await seededRun(2);
    await setCaseStatuses(db.pool, seeded.runCaseIds, 'pending');
    await recordRunEnd(db.pool, {
      workflowId,
      experimentId: seeded.experimentId,
      reason: 'skipped_stale: experiment expects message m2',
    });
    await recordRunEnd(db.pool, { workflowId, experimentId: seeded.experimentId, reason: 'again' });
    const rows = await eventsOf(seeded.experimentId);
    assert.equal(caseEvents(rows).length, 0);
    assert.equal(runEvents(rows).length, 1);
    const run = (runEvents(rows)[0]?.payload as RunFinishedPayload).run;
    assert.equal(run.status, 'canceled');
    assert.equal(run.reason, 'skipped_stale: experiment expects message m2');
    assert.equal(run.cases.unfinished, 2);
  });

  test('a case closed outside any run gets its event without a run; RESULT_EVENTS_ENABLED=false records nothing', async () => {
    const { seeded, workflowId } = await seededRun(2);
    const [a, b] = seeded.runCaseIds as [number, number];
    await cancelActiveCases(db.pool, {
      experimentId: seeded.experimentId,
      runCaseIds: [a],
      reason: 'bulk cancel',
    });
    await persistCaseResult(db.pool, result(seeded.experimentId, b), { workflowId, resultEvents: false });
    const rows = await eventsOf(seeded.experimentId);
    assert.deepEqual(
      rows.map((r) => [r.event_type, r.subject, r.workflow_id]),
      [['run_case.finished', String(a), null]],
    );
    assert.equal((rows[0]?.payload as CaseFinishedPayload).run, null);
  });
});

describe('relayPendingEvents', () => {
  test('marks events published only after publish resolved; a failed publish leaves them pending', async () => {
    const { seeded, workflowId } = await seededRun(1);
    await persistCaseResult(db.pool, result(seeded.experimentId, seeded.runCaseIds[0] as number), {
      workflowId,
    });
    const pendingBefore = await countPendingEvents(db.pool);
    assert.ok(pendingBefore >= 2);

    await assert.rejects(
      relayPendingEvents(db.pool, 1000, async () => {
        throw new Error('broker gone');
      }),
      /broker gone/,
    );
    assert.equal(await countPendingEvents(db.pool), pendingBefore);

    const seen: string[] = [];
    let total = 0;
    for (;;) {
      const n = await relayPendingEvents(db.pool, 2, async (events) => {
        seen.push(...events.map((e) => e.eventId));
      });
      if (n === 0) break;
      total += n;
    }
    assert.equal(total, pendingBefore);
    assert.equal(new Set(seen).size, seen.length, 'each event once');
    assert.equal(await countPendingEvents(db.pool), 0);
    assert.equal(await prunePublishedEvents(db.pool, 1), 0, 'fresh events are kept');
  });

  test('two relays at once never take the same event', async () => {
    const { seeded, workflowId } = await seededRun(6);
    await Promise.all(
      seeded.runCaseIds.map((id) =>
        persistCaseResult(db.pool, result(seeded.experimentId, id), { workflowId }),
      ),
    );
    const seen: string[] = [];
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => (release = r));
    let locked: () => void = () => undefined;
    const holding = new Promise<void>((r) => (locked = r));
    const slow = relayPendingEvents(db.pool, 3, async (events) => {
      seen.push(...events.map((e) => e.eventId));
      locked();
      await gate;
    });
    await holding;
    // The first relay holds its rows; the second skips them instead of waiting.
    const fast = await relayPendingEvents(db.pool, 100, async (events) => {
      seen.push(...events.map((e) => e.eventId));
    });
    release();
    const slowCount = await slow;
    assert.equal(slowCount, 3);
    assert.ok(fast >= 4, `the second relay took the other events (${fast})`);
    assert.equal(slowCount + fast, seen.length);
    assert.equal(new Set(seen).size, seen.length);
    assert.equal(await countPendingEvents(db.pool), 0);
  });
});
