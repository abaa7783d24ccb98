import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rescoreCommand } from '../../src/cli/commands/rescore';
import { persistCaseScores } from '../../src/db/run-case-repository';
import { loadEvaluatorApiKeys, withEvaluatorApiKeys } from '../../src/scoring/evaluator-secrets';
import {
  createTestDatabase,
  seedExperiment,
  type SeededExperiment,
  type TestDatabase,
} from '../support/database';
import { openAiReply, startLlmJudgeServer, type LlmJudgeServer } from '../support/llm-judge-server';

const API_KEY = 'sk-rescore-SECRET-0042';

let db: TestDatabase;
let judge: LlmJudgeServer;
const savedEnv: Record<string, string | undefined> = {};
/** What the command reads from the environment: the test database, quiet logs, and no Docker at all. */
const commandEnv = (url: string): Record<string, string> => ({
  DATABASE_URL: url,
  LOG_LEVEL: 'silent',
  DOCKER_SOCKET_PATH: '/nonexistent/agentbench-rescore-test.sock',
});

before(async () => {
  db = await createTestDatabase();
  judge = await startLlmJudgeServer();
  for (const [k, v] of Object.entries(commandEnv(db.url))) {
    savedEnv[k] = process.env[k];
    process.env[k] = v;
  }
});
after(async () => {
  for (const [k, v] of Object.entries(savedEnv)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  await judge.close();
  await db.drop();
});

/** Two finished cases (one success, one failed) with stored results and old scores, two evaluators. */
async function seedFinishedExperiment(): Promise<
  SeededExperiment & { paths: [string, string]; keys: [string, string] }
> {
  const seeded = await seedExperiment(db.pool, { cases: 2, evaluators: 2, queueStatus: 'done' });
  const paths: [string, string] = [`/e${seeded.experimentId}/a`, `/e${seeded.experimentId}/b`];
  const { rows } = await db.pool.query<{ evaluator_key: string }>(
    'SELECT evaluator_key FROM evaluators WHERE id = ANY($1) ORDER BY id',
    [seeded.evaluatorIds],
  );
  const keys = rows.map((r) => r.evaluator_key) as [string, string];
  for (const [i, evaluatorId] of seeded.evaluatorIds.entries()) {
    await db.pool.query(
      `UPDATE evaluators SET base_url = $2, api_key = $3, model_name = 'judge-model', api_style = 'openai',
              prompt_template = 'Q: {{data_item.input}} A: {{run.output}} ({{run.status}}, {{run.latency_ms}} ms)'
        WHERE id = $1`,
      [evaluatorId, `${judge.origin}${paths[i]}`, API_KEY],
    );
  }
  const [ok, bad] = seeded.runCaseIds as [number, number];
  await db.pool.query(
    `UPDATE run_cases SET status = 'success', agent_output = '{"answer":"4"}', agent_trajectory = '[{"step":1}]',
            logs = 'stored logs', latency_ms = 1234, finished_at = now() WHERE id = $1`,
    [ok],
  );
  await db.pool.query(
    `UPDATE run_cases SET status = 'failed', agent_output = NULL, logs = 'boom', latency_ms = 10,
            error_message = 'E_AGENT_EXIT_NON_ZERO: exit code 1', finished_at = now() WHERE id = $1`,
    [bad],
  );
  for (const runCaseId of [ok, bad]) {
    await persistCaseScores(db.pool, {
      runCaseId,
      experimentId: seeded.experimentId,
      scores: seeded.evaluatorIds.map((evaluatorId, i) => ({
        scorerKey: keys[i] ?? '',
        evaluatorId,
        score: 0,
        reason: 'old verdict',
        rawResult: { source: 'llm' },
      })),
    });
  }
  return { ...seeded, paths, keys };
}

async function scores(runCaseId: number) {
  const rcs = await db.pool.query<{
    scorer_key: string;
    score: number;
    reason: string;
    raw_result_json: unknown;
  }>(
    'SELECT scorer_key, score, reason, raw_result_json FROM run_case_scores WHERE run_case_id = $1 ORDER BY scorer_key',
    [runCaseId],
  );
  const er = await db.pool.query<{ evaluator_id: number; score: number; reason: string }>(
    'SELECT evaluator_id, score, reason FROM evaluate_results WHERE run_case_id = $1 ORDER BY evaluator_id',
    [runCaseId],
  );
  const rc = await db.pool.query<{ final_score: number | null; status: string; agent_output: unknown }>(
    'SELECT final_score, status, agent_output FROM run_cases WHERE id = $1',
    [runCaseId],
  );
  return { runCaseScores: rcs.rows, evaluateResults: er.rows, row: rc.rows[0] };
}

describe('benchctl rescore', () => {
  test('re-scores the stored results with the current evaluators; failed cases get the sentinel without a call', async () => {
    const seeded = await seedFinishedExperiment();
    const [ok, bad] = seeded.runCaseIds as [number, number];
    const [keyA, keyB] = seeded.keys;
    judge.script(seeded.paths[0], { json: openAiReply('{"score":0.95,"reason":"right answer"}') });
    judge.script(seeded.paths[1], { json: openAiReply('{"score":0.7,"reason":"mostly"}') });

    await rescoreCommand(seeded.experimentId, {});

    // The judge saw what run_cases and data_items store, once per evaluator, only for the successful case.
    const [sentA] = judge.requestsTo(seeded.paths[0]);
    assert.equal(judge.requestsTo(seeded.paths[0]).length, 1);
    assert.equal(judge.requestsTo(seeded.paths[1]).length, 1);
    assert.equal(sentA?.headers.authorization, `Bearer ${API_KEY}`);
    const prompt = (JSON.parse(sentA?.body ?? '{}') as { messages: Array<{ content: string }> }).messages[1]
      ?.content;
    assert.equal(prompt, 'Q: question 1 A: {\n  "answer": "4"\n} (success, 1234 ms)');

    const good = await scores(ok);
    assert.deepEqual(
      good.runCaseScores.map((r) => [r.scorer_key, r.score, r.reason]),
      [
        [keyA, 1, 'right answer'],
        [keyB, 0.5, 'mostly'],
      ].sort(),
    );
    assert.deepEqual(
      good.evaluateResults.map((r) => [r.evaluator_id, r.score]),
      [
        [seeded.evaluatorIds[0], 1],
        [seeded.evaluatorIds[1], 0.5],
      ],
    );
    assert.equal(good.row?.final_score, 0.75);
    assert.equal(good.row?.status, 'success');
    assert.deepEqual(good.row?.agent_output, { answer: '4' });
    for (const r of good.runCaseScores) assert.ok(!JSON.stringify(r.raw_result_json).includes(API_KEY));

    const failed = await scores(bad);
    assert.deepEqual(
      failed.runCaseScores.map((r) => [r.score, r.reason, r.raw_result_json]),
      [
        [-1, 'E_SCORE_DEFAULT_RUN_CASE_FAILED', { source: 'default' }],
        [-1, 'E_SCORE_DEFAULT_RUN_CASE_FAILED', { source: 'default' }],
      ],
    );
    assert.equal(failed.row?.final_score, null);
    assert.equal(failed.row?.status, 'failed');
  });

  test('--scorer replaces only that evaluator’s rows', async () => {
    const seeded = await seedFinishedExperiment();
    const [ok] = seeded.runCaseIds as [number, number];
    const [keyA, keyB] = seeded.keys;
    judge.script(seeded.paths[1], { json: openAiReply('{"score":1,"reason":"now correct"}') });

    await rescoreCommand(seeded.experimentId, { scorer: keyB });

    assert.equal(judge.requestsTo(seeded.paths[0]).length, 0);
    assert.equal(judge.requestsTo(seeded.paths[1]).length, 1);
    const after = await scores(ok);
    assert.deepEqual(
      after.runCaseScores.map((r) => [r.scorer_key, r.score, r.reason]),
      [
        [keyB, 1, 'now correct'],
        [keyA, 0, 'old verdict'],
      ].sort(),
    );
    assert.deepEqual(
      after.evaluateResults.map((r) => [r.evaluator_id, r.score, r.reason]),
      [
        [seeded.evaluatorIds[0], 0, 'old verdict'],
        [seeded.evaluatorIds[1], 1, 'now correct'],
      ],
    );
    assert.equal(after.row?.final_score, 0.5);
  });

  test('an unknown --scorer or experiment is a CLI error that changes nothing', async () => {
    const seeded = await seedFinishedExperiment();
    const [ok] = seeded.runCaseIds as [number, number];
    const before = await scores(ok);
    await assert.rejects(
      rescoreCommand(seeded.experimentId, { scorer: 'no-such-judge' }),
      /has no evaluator "no-such-judge"/,
    );
    await assert.rejects(rescoreCommand(987_654_321, {}), /experiment 987654321 not found/);
    assert.deepEqual(await scores(ok), before);
  });

  test('never loads a Docker client', () => {
    const modules = Object.keys(require.cache);
    assert.ok(
      modules.some((p) => /node_modules[\\/]pg[\\/]/.test(p)),
      'the module registry is visible (pg is loaded)',
    );
    assert.deepEqual(
      modules.filter((p) => /node_modules[\\/](dockerode|docker-modem)[\\/]/.test(p)),
      [],
    );
  });
});

describe('evaluator api keys', () => {
  test('loadEvaluatorApiKeys reads evaluators.api_key; withEvaluatorApiKeys fills redacted scorers', async () => {
    const seeded = await seedExperiment(db.pool, { cases: 1, evaluators: 2 });
    const [withKey, withoutKey] = seeded.evaluatorIds as [number, number];
    await db.pool.query('UPDATE evaluators SET api_key = $2 WHERE id = $1', [withKey, API_KEY]);

    const keys = await loadEvaluatorApiKeys(db.pool, [withKey, withoutKey, withKey, 0]);
    assert.deepEqual([...keys.entries()].sort(), [
      [withKey, API_KEY],
      [withoutKey, ''],
    ]);
    assert.deepEqual(await loadEvaluatorApiKeys(db.pool, []), new Map());

    const redacted = [withKey, 987_654_321, 0].map((id) => ({
      id,
      scorer_key: `k${id}`,
      scorer_config: { base_url: 'http://judge', api_key: '[REDACTED]' },
    }));
    assert.deepEqual(
      withEvaluatorApiKeys(redacted, keys).map((s) => s.scorer_config.api_key),
      [API_KEY, '', ''],
    );
    assert.equal(redacted[0]?.scorer_config.api_key, '[REDACTED]', 'inputs are not mutated');
  });
});
