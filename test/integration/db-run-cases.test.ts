import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ACTIVE_CASE_STATUSES,
  CASE_STATUSES,
  PROGRESS_GUARDS,
  type ProgressStatus,
} from '../../src/domain/case-status';
import {
  cancelActiveCases,
  getCaseStatuses,
  persistCaseResult,
  persistCaseScores,
  supersedeFailedCases,
  transitionCaseStatus,
  type CaseResultRow,
  type CaseScore,
} from '../../src/db/run-case-repository';
import { createTestDatabase, seedExperiment, setCaseStatuses, type TestDatabase } from '../support/database';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db.drop();
});

async function caseRow(runCaseId: number): Promise<Record<string, unknown>> {
  const { rows } = await db.pool.query<Record<string, unknown>>('SELECT * FROM run_cases WHERE id = $1', [
    runCaseId,
  ]);
  assert.ok(rows[0], `run case ${runCaseId} exists`);
  return rows[0];
}

async function scoreRows(runCaseId: number) {
  const scores = await db.pool.query(
    'SELECT scorer_key, score, reason, raw_result_json FROM run_case_scores WHERE run_case_id = $1 ORDER BY id',
    [runCaseId],
  );
  const results = await db.pool.query(
    'SELECT evaluator_id, score, reason, raw_result FROM evaluate_results WHERE run_case_id = $1 ORDER BY id',
    [runCaseId],
  );
  return { scores: scores.rows, results: results.rows };
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
    agentTrajectory: [{ step: 1, name: 'span' }],
    agentOutput: { answer: '4' },
    latencyMs: 88,
    logs: 'case logs',
    errorMessage: null,
    runtimeSnapshot: { runtime_type: 'agno_docker', run_case_id: runCaseId },
    inspectEvalId: 'eval-1',
    inspectSampleId: String(runCaseId),
    usage: { inspect_enabled: true, timings_ms: { total: 88 } },
    scores: null,
    ...overrides,
  };
}

const judged = (evaluatorId: number, score: number, scorerKey = `judge-${evaluatorId}`): CaseScore => ({
  scorerKey,
  evaluatorId,
  score,
  reason: `reason ${score}`,
  rawResult: { evaluator_result: { score } },
});

describe('transitionCaseStatus guards (CONTRACT §3.2)', () => {
  for (const to of Object.keys(PROGRESS_GUARDS) as ProgressStatus[]) {
    const allowed: readonly string[] = PROGRESS_GUARDS[to];
    test(`→ ${to} is allowed exactly from ${allowed.join(', ')}`, async () => {
      const seed = await seedExperiment(db.pool, { cases: CASE_STATUSES.length });
      await Promise.all(
        CASE_STATUSES.map((s, i) => setCaseStatuses(db.pool, [seed.runCaseIds[i] as number], s)),
      );

      for (const [i, from] of CASE_STATUSES.entries()) {
        const runCaseId = seed.runCaseIds[i] as number;
        const changed = await transitionCaseStatus(db.pool, {
          experimentId: seed.experimentId,
          runCaseId,
          to,
        });
        assert.equal(changed, allowed.includes(from), `${from} → ${to}`);
        assert.equal(
          (await caseRow(runCaseId)).status,
          allowed.includes(from) ? to : from,
          `${from} → ${to}`,
        );
      }
    });
  }

  test('running sets started_at once and never moves it', async () => {
    const seed = await seedExperiment(db.pool, { cases: 1 });
    const runCaseId = seed.runCaseIds[0] as number;
    const experimentId = seed.experimentId;
    assert.equal(await transitionCaseStatus(db.pool, { experimentId, runCaseId, to: 'running' }), true);
    const first = (await caseRow(runCaseId)).started_at;
    assert.ok(first instanceof Date);
    await transitionCaseStatus(db.pool, { experimentId, runCaseId, to: 'trajectory' });
    await transitionCaseStatus(db.pool, { experimentId, runCaseId, to: 'running' });
    assert.deepEqual((await caseRow(runCaseId)).started_at, first);
  });

  test('a run case of another experiment is never touched', async () => {
    const seed = await seedExperiment(db.pool, { cases: 1 });
    const other = await seedExperiment(db.pool, { cases: 1 });
    const changed = await transitionCaseStatus(db.pool, {
      experimentId: other.experimentId,
      runCaseId: seed.runCaseIds[0] as number,
      to: 'running',
    });
    assert.equal(changed, false);
    assert.equal((await caseRow(seed.runCaseIds[0] as number)).status, 'pending');
  });

  test('rejects a target that is not a progress status', async () => {
    const seed = await seedExperiment(db.pool, { cases: 1 });
    await assert.rejects(
      transitionCaseStatus(db.pool, {
        experimentId: seed.experimentId,
        runCaseId: seed.runCaseIds[0] as number,
        to: 'success' as ProgressStatus,
      }),
    );
  });
});

describe('persistCaseResult', () => {
  test('writes every column of the final persist', async () => {
    const seed = await seedExperiment(db.pool, { cases: 1 });
    const runCaseId = seed.runCaseIds[0] as number;
    await setCaseStatuses(db.pool, [runCaseId], 'scoring');
    const startedAt = new Date('2026-01-02T03:04:05.000Z');

    const landed = await persistCaseResult(
      db.pool,
      result(seed.experimentId, runCaseId, {
        status: 'failed',
        agentOutput: 'bare string',
        logs: 'before\u0000after',
        errorMessage: 'E_AGENT_EXIT_NON_ZERO: exit 3',
        inspectEvalId: '',
        artifacts: { files: ['out.txt'] },
        inputTokens: 12,
        outputTokens: 34,
        startedAt,
      }),
    );

    assert.equal(landed, true);
    const row = await caseRow(runCaseId);
    assert.equal(row.status, 'failed');
    assert.deepEqual(row.agent_trajectory, [{ step: 1, name: 'span' }]);
    assert.equal(row.agent_output, 'bare string');
    assert.equal(row.latency_ms, 88);
    assert.equal(row.logs, 'before\uFFFDafter');
    assert.equal(row.error_message, 'E_AGENT_EXIT_NON_ZERO: exit 3');
    assert.deepEqual(row.runtime_snapshot_json, { runtime_type: 'agno_docker', run_case_id: runCaseId });
    assert.equal(row.inspect_eval_id, null);
    assert.equal(row.inspect_sample_id, String(runCaseId));
    assert.deepEqual(row.usage_json, { inspect_enabled: true, timings_ms: { total: 88 } });
    assert.deepEqual(row.artifacts_json, { files: ['out.txt'] });
    assert.equal(row.input_tokens, 12);
    assert.equal(row.output_tokens, 34);
    assert.deepEqual(row.started_at, startedAt);
    assert.ok(row.finished_at instanceof Date);
    assert.equal(row.final_score, null);
  });

  test('stores null output as SQL NULL, empty error as NULL, and leaves optional columns alone', async () => {
    const seed = await seedExperiment(db.pool, { cases: 1 });
    const runCaseId = seed.runCaseIds[0] as number;
    await transitionCaseStatus(db.pool, { experimentId: seed.experimentId, runCaseId, to: 'running' });
    const { started_at: startedBefore } = await caseRow(runCaseId);

    await persistCaseResult(
      db.pool,
      result(seed.experimentId, runCaseId, {
        agentOutput: null,
        agentTrajectory: [],
        errorMessage: '',
        startedAt: new Date('2000-01-01T00:00:00Z'),
      }),
    );

    const row = await caseRow(runCaseId);
    assert.equal(row.agent_output, null);
    assert.deepEqual(row.agent_trajectory, []);
    assert.equal(row.error_message, null);
    assert.deepEqual(row.artifacts_json, {});
    assert.equal(row.input_tokens, null);
    assert.deepEqual(row.started_at, startedBefore, 'an existing started_at wins');
  });

  test('lands only on active rows; canceled and finished rows are never overwritten', async () => {
    const seed = await seedExperiment(db.pool, { cases: CASE_STATUSES.length, evaluators: 1 });
    const evaluatorId = seed.evaluatorIds[0] as number;
    await Promise.all(
      CASE_STATUSES.map((s, i) => setCaseStatuses(db.pool, [seed.runCaseIds[i] as number], s)),
    );

    for (const [i, from] of CASE_STATUSES.entries()) {
      const runCaseId = seed.runCaseIds[i] as number;
      const landed = await persistCaseResult(
        db.pool,
        result(seed.experimentId, runCaseId, { scores: [judged(evaluatorId, 1)] }),
      );
      const active = (ACTIVE_CASE_STATUSES as readonly string[]).includes(from);
      assert.equal(landed, active, from);
      const row = await caseRow(runCaseId);
      assert.equal(row.status, active ? 'success' : from, from);
      assert.equal(row.logs, active ? 'case logs' : null, from);
      assert.equal((await scoreRows(runCaseId)).scores.length, active ? 1 : 0, from);
    }
  });

  test('does not touch the score tables when scores is null', async () => {
    const seed = await seedExperiment(db.pool, { cases: 1 });
    const runCaseId = seed.runCaseIds[0] as number;
    const evaluatorId = seed.evaluatorIds[0] as number;
    await persistCaseScores(db.pool, {
      runCaseId,
      experimentId: seed.experimentId,
      scores: [judged(evaluatorId, 0.5)],
    });

    await persistCaseResult(db.pool, result(seed.experimentId, runCaseId, { scores: null }));

    assert.equal((await scoreRows(runCaseId)).scores.length, 1);
    assert.equal((await caseRow(runCaseId)).final_score, 0.5);
  });
});

describe('scores (CONTRACT §3.5, sentinel −1 excluded from final_score)', () => {
  test('writes run_case_scores for all and evaluate_results only for evaluator ids > 0', async () => {
    const seed = await seedExperiment(db.pool, { cases: 1, evaluators: 2 });
    const [e1, e2] = seed.evaluatorIds as [number, number];
    const runCaseId = seed.runCaseIds[0] as number;

    await persistCaseResult(
      db.pool,
      result(seed.experimentId, runCaseId, {
        scores: [judged(e1, 1), judged(e2, 0.5), judged(0, 0, ''), judged(0, -1, 'task_success')],
      }),
    );

    const { scores, results } = await scoreRows(runCaseId);
    assert.deepEqual(
      scores.map((s) => [s.scorer_key, s.score]),
      [
        [`judge-${e1}`, 1],
        [`judge-${e2}`, 0.5],
        ['unknown', 0],
        ['task_success', -1],
      ],
    );
    assert.deepEqual(scores[0]?.raw_result_json, { evaluator_result: { score: 1 } });
    assert.deepEqual(
      results.map((r) => [r.evaluator_id, r.score, r.reason]),
      [
        [e1, 1, 'reason 1'],
        [e2, 0.5, 'reason 0.5'],
      ],
    );
    assert.equal((await caseRow(runCaseId)).final_score, 0.5, 'avg of 1, 0.5, 0 — the −1 is left out');
  });

  test('re-scoring deletes the previous scores before inserting', async () => {
    const seed = await seedExperiment(db.pool, { cases: 1, evaluators: 2 });
    const [e1, e2] = seed.evaluatorIds as [number, number];
    const runCaseId = seed.runCaseIds[0] as number;
    const experimentId = seed.experimentId;
    await persistCaseResult(
      db.pool,
      result(experimentId, runCaseId, { scores: [judged(e1, 0), judged(e2, 0)] }),
    );

    await persistCaseScores(db.pool, { runCaseId, experimentId, scores: [judged(e2, 1)] });

    const { scores, results } = await scoreRows(runCaseId);
    assert.deepEqual(
      scores.map((s) => s.score),
      [1],
    );
    assert.deepEqual(
      results.map((r) => r.evaluator_id),
      [e2],
    );
    assert.equal((await caseRow(runCaseId)).final_score, 1);
  });

  test('final_score is NULL when every score is the sentinel or there are none', async () => {
    const seed = await seedExperiment(db.pool, { cases: 1, evaluators: 1 });
    const runCaseId = seed.runCaseIds[0] as number;
    const experimentId = seed.experimentId;
    const evaluatorId = seed.evaluatorIds[0] as number;
    await persistCaseResult(db.pool, result(experimentId, runCaseId, { scores: [judged(evaluatorId, -1)] }));
    assert.equal((await caseRow(runCaseId)).final_score, null);
    assert.equal((await scoreRows(runCaseId)).scores.length, 1);

    await persistCaseScores(db.pool, { runCaseId, experimentId, scores: [judged(evaluatorId, 0.5)] });
    assert.equal((await caseRow(runCaseId)).final_score, 0.5);
    await persistCaseScores(db.pool, { runCaseId, experimentId, scores: [] });
    assert.equal((await caseRow(runCaseId)).final_score, null);
  });

  test('a duplicate evaluator id fails the whole persist (uq_evaluate_result) and writes nothing', async () => {
    const seed = await seedExperiment(db.pool, { cases: 1, evaluators: 1 });
    const runCaseId = seed.runCaseIds[0] as number;
    const evaluatorId = seed.evaluatorIds[0] as number;
    await assert.rejects(
      persistCaseResult(
        db.pool,
        result(seed.experimentId, runCaseId, { scores: [judged(evaluatorId, 1), judged(evaluatorId, 0)] }),
      ),
      /uq_evaluate_result/,
    );
    assert.equal((await caseRow(runCaseId)).status, 'pending');
    assert.equal((await scoreRows(runCaseId)).scores.length, 0);
  });

  test('persistCaseScores refuses a run case of another experiment', async () => {
    const seed = await seedExperiment(db.pool, { cases: 1 });
    const other = await seedExperiment(db.pool, { cases: 1 });
    await assert.rejects(
      persistCaseScores(db.pool, {
        runCaseId: seed.runCaseIds[0] as number,
        experimentId: other.experimentId,
        scores: [judged(0, 1)],
      }),
      /not found/,
    );
  });
});

describe('cancelActiveCases', () => {
  test('cancels the listed active rows with the reason and leaves finished rows alone', async () => {
    const seed = await seedExperiment(db.pool, { cases: 4 });
    const [a, b, c, d] = seed.runCaseIds as [number, number, number, number];
    await setCaseStatuses(db.pool, [b], 'scoring');
    await setCaseStatuses(db.pool, [c], 'success');

    const n = await cancelActiveCases(db.pool, {
      experimentId: seed.experimentId,
      runCaseIds: [a, b, c],
      reason: 'manual terminated by tester',
    });

    assert.equal(n, 2);
    for (const id of [a, b]) {
      const row = await caseRow(id);
      assert.equal(row.status, 'canceled');
      assert.equal(row.error_message, 'manual terminated by tester');
      assert.ok(row.finished_at instanceof Date);
    }
    assert.equal((await caseRow(c)).status, 'success');
    assert.equal((await caseRow(c)).error_message, null);
    assert.equal((await caseRow(d)).status, 'pending');
  });

  test("'all' cancels every active row of the experiment and nothing elsewhere", async () => {
    const seed = await seedExperiment(db.pool, { cases: 3 });
    const other = await seedExperiment(db.pool, { cases: 1 });
    await setCaseStatuses(db.pool, [seed.runCaseIds[0] as number], 'failed');

    const n = await cancelActiveCases(db.pool, {
      experimentId: seed.experimentId,
      runCaseIds: 'all',
      reason: 'stop',
    });

    assert.equal(n, 2);
    assert.deepEqual([...(await getCaseStatuses(db.pool, seed.experimentId)).values()].sort(), [
      'canceled',
      'canceled',
      'failed',
    ]);
    assert.equal((await caseRow(other.runCaseIds[0] as number)).status, 'pending');
  });
});

describe('getCaseStatuses', () => {
  test('returns the statuses of the requested run cases only', async () => {
    const seed = await seedExperiment(db.pool, { cases: 3 });
    const [a, b] = seed.runCaseIds as [number, number];
    await setCaseStatuses(db.pool, [b], 'running');
    assert.deepEqual(
      await getCaseStatuses(db.pool, seed.experimentId, [a, b]),
      new Map([
        [a, 'pending'],
        [b, 'running'],
      ]),
    );
  });
});

describe('supersedeFailedCases (platform "retry failed", CONTRACT §3.6)', () => {
  test('adds a pending next attempt for exactly the latest failed rows and re-queues the experiment', async () => {
    const seed = await seedExperiment(db.pool, { cases: 4, queueStatus: 'done' });
    const [failed, success, timeout, canceled] = seed.runCaseIds as [number, number, number, number];
    await setCaseStatuses(db.pool, [failed], 'failed');
    await setCaseStatuses(db.pool, [success], 'success');
    await setCaseStatuses(db.pool, [timeout], 'timeout');
    await setCaseStatuses(db.pool, [canceled], 'canceled');
    await db.pool.query(
      `UPDATE experiments SET queue_message_id = 'old-message', started_at = now(), finished_at = now() WHERE id = $1`,
      [seed.experimentId],
    );

    const superseded = await supersedeFailedCases(db.pool, seed.experimentId);

    assert.equal(superseded.length, 1);
    const [s] = superseded as [(typeof superseded)[number]];
    assert.equal(s.oldRunCaseId, failed);
    assert.equal(s.dataItemId, seed.dataItemIds[0]);
    assert.equal(s.attemptNo, 2);
    const fresh = await caseRow(s.newRunCaseId);
    assert.equal(fresh.status, 'pending');
    assert.equal(fresh.is_latest, true);
    assert.equal(fresh.attempt_no, 2);
    assert.equal(fresh.agent_id, seed.agentId);
    assert.equal(fresh.experiment_id, seed.experimentId);
    assert.equal((await caseRow(failed)).is_latest, false);

    const latest = await db.pool.query<{ data_item_id: number; n: number; attempt: number }>(
      `SELECT data_item_id, count(*)::int AS n, max(attempt_no) AS attempt FROM run_cases
        WHERE experiment_id = $1 AND is_latest GROUP BY data_item_id ORDER BY data_item_id`,
      [seed.experimentId],
    );
    assert.deepEqual(
      latest.rows,
      seed.dataItemIds.map((item, i) => ({ data_item_id: item, n: 1, attempt: i === 0 ? 2 : 1 })),
    );

    const { rows } = await db.pool.query('SELECT * FROM experiments WHERE id = $1', [seed.experimentId]);
    assert.equal(rows[0].queue_status, 'queued');
    assert.ok(rows[0].queued_at instanceof Date);
    assert.equal(rows[0].queue_message_id, null);
    assert.equal(rows[0].started_at, null);
    assert.equal(rows[0].finished_at, null);

    await setCaseStatuses(db.pool, [s.newRunCaseId], 'failed');
    const again = await supersedeFailedCases(db.pool, seed.experimentId);
    assert.equal(again.length, 1);
    assert.equal(again[0]?.oldRunCaseId, s.newRunCaseId);
    assert.equal(again[0]?.attemptNo, 3);
  });

  test('with no failed rows changes nothing', async () => {
    const seed = await seedExperiment(db.pool, { cases: 1, queueStatus: 'done' });
    await setCaseStatuses(db.pool, seed.runCaseIds, 'success');
    assert.deepEqual(await supersedeFailedCases(db.pool, seed.experimentId), []);
    const { rows } = await db.pool.query('SELECT queue_status FROM experiments WHERE id = $1', [
      seed.experimentId,
    ]);
    assert.equal(rows[0].queue_status, 'done');
  });
});
