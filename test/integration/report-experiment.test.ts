import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { saveCaseResult, type CaseRawResult } from '../../src/db/case-result-repository';
import {
  cancelActiveCases,
  persistCaseResult,
  supersedeFailedCases,
  type CaseResultRow,
  type CaseScore,
} from '../../src/db/run-case-repository';
import { saveRunRequest } from '../../src/db/run-request-repository';
import { loadExperimentReport } from '../../src/report/experiment-report-data';
import { renderExperimentReport } from '../../src/report/experiment-report-html';
import type { ExperimentReport } from '../../src/report/experiment-report-model';
import { CHART_COLOURS } from '../../src/report/report-charts';
import { PNG } from 'pngjs';
import { createTestDatabase, seedExperiment, setCaseStatuses, type TestDatabase } from '../support/database';

const exec = promisify(execFile);
const BENCHCTL = path.resolve(__dirname, '../../bin/benchctl');
const API_KEY = 'sk-report-SECRET-4242-abcdef';
const HOSTILE = '<script>alert("pwned")</script></details>';
const LOG_SIZE = 200_000;

let db: TestDatabase;
let tmp: string;
before(async () => {
  db = await createTestDatabase();
  tmp = await mkdtemp(path.join(os.tmpdir(), 'agentbench-report-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
  await db.drop();
});

interface Seeded {
  experimentId: number;
  keys: [string, string];
  ids: {
    success: number;
    failed: number;
    timeout: number;
    canceled: number;
    running: number;
    retried: number;
    retriedOld: number;
  };
  workflows: [string, string];
}

function rawResult(overrides: Partial<CaseRawResult>): CaseRawResult {
  return {
    status: 'success',
    errorMessage: null,
    exitCode: 0,
    agentOutput: null,
    logs: '',
    stdoutTrajectory: null,
    agentUsage: null,
    timings: { sandboxConnectMs: 100, caseExecMs: 800, totalMs: 950, containerPhaseMs: 1234 },
    startedAt: new Date().toISOString(),
    finishedAt: new Date().toISOString(),
    image: 'bench/busybox:latest',
    containerName: null,
    attempt: 1,
    ...overrides,
  };
}

/**
 * An experiment in the shapes a real run leaves behind, written through the repositories: one case
 * per status, a retried data item (superseded attempt 1, successful attempt 2 in a second run),
 * scores of two evaluators, container-phase records, spans, and an evaluator key in free text.
 */
async function seedReportExperiment(): Promise<Seeded> {
  const seeded = await seedExperiment(db.pool, { cases: 6, evaluators: 2 });
  const { experimentId, evaluatorIds } = seeded;
  const { rows } = await db.pool.query<{ evaluator_key: string }>(
    'SELECT evaluator_key FROM evaluators WHERE id = ANY($1) ORDER BY id',
    [evaluatorIds],
  );
  const keys = rows.map((r) => r.evaluator_key) as [string, string];
  await db.pool.query('UPDATE evaluators SET api_key = $2 WHERE id = $1', [evaluatorIds[0], API_KEY]);
  const [success, failed, timeout, canceled, running, retriedOld] = seeded.runCaseIds as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];

  const judged = (a: number, b: number): CaseScore[] => [
    {
      scorerKey: keys[0],
      evaluatorId: evaluatorIds[0] ?? 0,
      score: a,
      reason: a === -1 ? 'E_SCORE_DEFAULT_RUN_CASE_FAILED' : `verdict ${a}`,
      rawResult: { source: 'llm', scorer: { api_key: API_KEY } },
    },
    {
      scorerKey: keys[1],
      evaluatorId: evaluatorIds[1] ?? 0,
      score: b,
      reason: b === -1 ? 'E_SCORE_DEFAULT_RUN_CASE_FAILED' : `verdict ${b}`,
      rawResult: { source: 'llm' },
    },
  ];
  const row = (runCaseId: number, overrides: Partial<CaseResultRow>): CaseResultRow => ({
    runCaseId,
    experimentId,
    status: 'success',
    agentTrajectory: [],
    agentOutput: null,
    latencyMs: 950,
    logs: '',
    errorMessage: null,
    runtimeSnapshot: { scorers: [{ scorer_config: { api_key: '[REDACTED]' } }] },
    inspectEvalId: null,
    inspectSampleId: String(runCaseId),
    usage: { trajectory_source: 'spans' },
    startedAt: new Date(Date.now() - 2000),
    scores: null,
    ...overrides,
  });

  // Attempt 1 of the retried item fails, then the platform's "retry failed" supersedes it.
  await persistCaseResult(
    db.pool,
    row(retriedOld, {
      status: 'failed',
      errorMessage: 'E_AGENT_EXIT_NON_ZERO: exit code 9',
      scores: judged(-1, -1),
    }),
  );
  const [superseded] = await supersedeFailedCases(db.pool, experimentId);
  assert.ok(superseded);
  const retried = superseded.newRunCaseId;

  const workflows: [string, string] = [
    `experiment-${experimentId}-first`,
    `experiment-${experimentId}-retry`,
  ];
  await saveRunRequest(db.pool, {
    workflowId: workflows[0],
    experimentId,
    messageId: 'first',
    request: { experiment: { id: experimentId, triggered_by: 'user-first' } },
    cases: seeded.runCaseIds.map((runCaseId) => ({ runCaseId, caseInput: {} })),
  });
  await saveRunRequest(db.pool, {
    workflowId: workflows[1],
    experimentId,
    messageId: 'retry',
    request: { experiment: { id: experimentId, triggered_by: 'user-retry' } },
    cases: [{ runCaseId: retried, caseInput: {} }],
  });

  const bigLogs = `LOG-START ${'x'.repeat(LOG_SIZE - 'LOG-START '.length - ' LOG-END'.length)} LOG-END`;
  await saveCaseResult(db.pool, workflows[0], success, rawResult({ exitCode: 0 }));
  await persistCaseResult(
    db.pool,
    row(success, {
      agentOutput: { answer: '4', note: `judge key ${API_KEY}`, api_key: 'agent-own-secret-value' },
      agentTrajectory: [{ step: 1 }, { step: 2 }],
      logs: bigLogs,
      inspectEvalId: workflows[0],
      scores: judged(1, 0.5),
    }),
  );
  await saveCaseResult(db.pool, workflows[0], failed, rawResult({ status: 'failed', exitCode: 3 }));
  await persistCaseResult(
    db.pool,
    row(failed, {
      status: 'failed',
      agentOutput: HOSTILE,
      errorMessage: `E_AGENT_EXIT_NON_ZERO: exit code 3 ${HOSTILE}`,
      logs: 'boom',
      scores: judged(-1, -1),
    }),
  );
  await saveCaseResult(db.pool, workflows[0], timeout, rawResult({ status: 'timeout', exitCode: null }));
  await persistCaseResult(
    db.pool,
    row(timeout, {
      status: 'timeout',
      errorMessage: 'E_CASE_TIMEOUT: exceeded 180 s',
      scores: judged(-1, -1),
    }),
  );
  await cancelActiveCases(db.pool, {
    experimentId,
    runCaseIds: [canceled],
    reason: 'manual terminated by tester',
  });
  await setCaseStatuses(db.pool, [running], 'running');
  await saveCaseResult(db.pool, workflows[1], retried, rawResult({ exitCode: 0, attempt: 2 }));
  await persistCaseResult(
    db.pool,
    row(retried, { agentOutput: 'attempt 2 answer', inspectEvalId: workflows[1], scores: judged(1, 0) }),
  );

  await db.pool.query(
    `INSERT INTO otel_traces (name, run_case_id, experiment_id, raw) SELECT 'span ' || n, $1, $2, '{}'::jsonb FROM generate_series(1, 3) AS n`,
    [success, experimentId],
  );
  await db.pool.query(
    `INSERT INTO otel_traces (name, run_case_id, experiment_id, raw, is_deleted) VALUES ('deleted', $1, $2, '{}', TRUE)`,
    [success, experimentId],
  );

  return {
    experimentId,
    keys,
    ids: { success, failed, timeout, canceled, running, retried, retriedOld },
    workflows,
  };
}

describe('experiment report from Postgres', () => {
  let seeded: Seeded;
  let report: ExperimentReport;
  before(async () => {
    seeded = await seedReportExperiment();
    const loaded = await loadExperimentReport(db.pool, seeded.experimentId);
    assert.ok(loaded);
    report = loaded;
  });

  test('header, counts and runs', () => {
    assert.equal(report.experiment.id, seeded.experimentId);
    assert.match(report.experiment.agent.key ?? '', /^agent-/);
    assert.equal(report.experiment.agent.version, 'v1');
    assert.match(report.experiment.dataset.name ?? '', /^dataset-/);
    assert.equal(report.experiment.triggeredBy, 'user-retry');
    assert.equal(report.experiment.queueStatus, 'consuming');
    assert.equal(report.totalCases, 6);
    assert.equal(report.supersededAttempts, 1);
    assert.deepEqual(report.statusCounts, { success: 2, failed: 1, timeout: 1, canceled: 1, running: 1 });
    assert.deepEqual(
      report.runs.map((r) => [r.workflowId, r.messageId, r.caseCount]),
      [
        [seeded.workflows[0], 'first', 6],
        [seeded.workflows[1], 'retry', 1],
      ],
    );
  });

  test('latest cases, failures first, with our tables’ facts', () => {
    const { ids } = seeded;
    assert.deepEqual(
      report.cases.map((c) => [c.runCaseId, c.status]),
      [
        [ids.failed, 'failed'],
        [ids.timeout, 'timeout'],
        [ids.canceled, 'canceled'],
        [ids.running, 'running'],
        [ids.success, 'success'],
        [ids.retried, 'success'],
      ],
    );
    assert.ok(!report.cases.some((c) => c.runCaseId === ids.retriedOld));
    const byId = new Map(report.cases.map((c) => [c.runCaseId, c]));
    const ok = byId.get(ids.success);
    assert.ok(ok);
    assert.equal(ok.exitCode, 0);
    assert.equal(ok.containerPhaseMs, 1234);
    assert.equal(ok.workflowId, seeded.workflows[0]);
    assert.equal(ok.trajectorySteps, 2);
    assert.equal(ok.trajectorySource, 'spans');
    assert.equal(ok.spanCount, 3);
    assert.equal(ok.latencyMs, 950);
    assert.deepEqual(
      ok.scores.map((s) => [s.scorerKey, s.score]),
      [
        [seeded.keys[0], 1],
        [seeded.keys[1], 0.5],
      ],
    );
    const retried = byId.get(ids.retried);
    assert.equal(retried?.attemptNo, 2);
    assert.equal(retried?.workflowId, seeded.workflows[1]);
    assert.equal(byId.get(ids.failed)?.exitCode, 3);
    assert.equal(byId.get(ids.timeout)?.exitCode, null);
    assert.equal(byId.get(ids.canceled)?.errorPreview?.head, 'manual terminated by tester');
    // Never ran: no container record, but the run that was asked to run it is known.
    assert.equal(byId.get(ids.running)?.workflowId, seeded.workflows[0]);
  });

  test('scores summarised per evaluator over the latest attempts only', () => {
    const [a, b] = report.scorers;
    // success 1 / failed −1 / timeout −1 / retried 1 (the superseded attempt's −1 is not counted).
    assert.deepEqual(
      [a?.scorerKey, a?.count, a?.verdicts, a?.sentinels, a?.mean, a?.passRate],
      [seeded.keys[0], 4, 2, 2, 1, 1],
    );
    assert.deepEqual(
      [b?.scorerKey, b?.count, b?.verdicts, b?.sentinels, b?.mean, b?.min, b?.max, b?.passRate],
      [seeded.keys[1], 4, 2, 2, 0.25, 0, 0.5, 0],
    );
    assert.equal(report.finalScoreCount, 2);
    assert.equal(report.finalScoreMean, (0.75 + 0.5) / 2);
  });

  test('huge logs are cut in SQL: first and last characters, the full length known', () => {
    const logs = report.cases.find((c) => c.runCaseId === seeded.ids.success)?.details?.logs;
    assert.ok(logs);
    assert.equal(logs.totalChars, LOG_SIZE);
    assert.ok(logs.head.startsWith('LOG-START'));
    assert.ok(logs.tail.endsWith('LOG-END'));
    assert.ok(logs.head.length + logs.tail.length < 20_000);
  });

  test('the rendered report escapes agent text and contains no secret', () => {
    const html = renderExperimentReport(report, {
      workflowUrl: (id) => `http://ui.test/namespaces/default/workflows/${id}`,
    });
    assert.ok(!html.includes(API_KEY));
    assert.ok(!html.includes('agent-own-secret-value'));
    assert.ok(html.includes('judge key [REDACTED]'));
    assert.ok(html.includes('&quot;api_key&quot;: &quot;[REDACTED]&quot;'));
    assert.ok(!html.includes('<script>'));
    assert.ok(html.includes('&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;&lt;/details&gt;'));
    assert.ok(
      html.includes(
        `<a href="http://ui.test/namespaces/default/workflows/${seeded.workflows[1]}" rel="noopener noreferrer">`,
      ),
    );
    assert.ok(html.includes('[… truncated: '));
    assert.ok(html.includes('LOG-END'));
  });

  test('charts are drawn as inline SVG: headless Chromium paints each of them, with the CSP kept', async () => {
    assert.deepEqual(report.attemptChanges, [{ from: 'failed', to: 'success', count: 1 }]);
    assert.ok(report.latencyBins.reduce((n, b) => n + b.count, 0) > 0);
    const html = renderExperimentReport(report);
    assert.match(html, /<meta http-equiv="Content-Security-Policy" content="default-src 'none';/);
    assert.ok(!/<script/i.test(html));
    for (const id of [
      'chart-status',
      'chart-latency',
      'chart-attempts',
      ...seeded.keys.map((k) => `chart-score-${k}`),
    ])
      assert.ok(html.includes(`id="${id}"`), id);
    const file = path.join(tmp, 'charts.html');
    const shot = path.join(tmp, 'charts.png');
    await writeFile(file, html);
    await exec(
      'chromium',
      [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--hide-scrollbars',
        '--force-device-scale-factor=1',
        `--user-data-dir=${path.join(tmp, 'chromium-profile')}`,
        '--window-size=1400,2600',
        `--screenshot=${shot}`,
        `file://${file}`,
      ],
      { timeout: 120_000 },
    );
    const png = PNG.sync.read(await readFile(shot));
    const painted = new Map<string, number>();
    for (let i = 0; i < png.data.length; i += 4) {
      const hex = `#${[png.data[i], png.data[i + 1], png.data[i + 2]].map((v) => (v ?? 0).toString(16).padStart(2, '0')).join('')}`;
      painted.set(hex, (painted.get(hex) ?? 0) + 1);
    }
    // Solid fills of each chart, in colours nothing else in the report uses (report-charts.ts).
    const expectPainted = (what: string, colour: string, minPixels: number) =>
      assert.ok(
        (painted.get(colour) ?? 0) >= minPixels,
        `${what} (${colour}): ${painted.get(colour) ?? 0} pixels`,
      );
    expectPainted('status bar: success', CHART_COLOURS.status.success as string, 1000);
    expectPainted('status bar: failed', CHART_COLOURS.status.failed as string, 1000);
    expectPainted('latency histogram', CHART_COLOURS.latency, 1000);
    expectPainted('score distributions', CHART_COLOURS.score, 1000);
    expectPainted('score distributions: no verdict', CHART_COLOURS.sentinel, 1000);
    expectPainted('rerun change failed → success', CHART_COLOURS.improved, 1000);
  });

  test('an unknown experiment is null', async () => {
    assert.equal(await loadExperimentReport(db.pool, 987_654_321), null);
  });

  test('an experiment without cases loads and renders', async () => {
    const empty = await seedExperiment(db.pool, { cases: 0, evaluators: 1 });
    const loaded = await loadExperimentReport(db.pool, empty.experimentId);
    assert.ok(loaded);
    assert.equal(loaded.totalCases, 0);
    assert.deepEqual(loaded.cases, []);
    assert.equal(loaded.scorers.length, 1);
    assert.equal(loaded.scorers[0]?.count, 0);
    assert.match(renderExperimentReport(loaded), /This experiment has no cases\./);
  });
});

describe('benchctl report', () => {
  const env = () => ({
    ...process.env,
    DATABASE_URL: db.url,
    LOG_LEVEL: 'silent',
    TEMPORAL_UI_URL: 'http://ui.test:8233',
  });

  test('writes the report file and prints its path', async () => {
    const seeded = await seedReportExperiment();
    const out = path.join(tmp, 'report.html');
    const { stdout } = await exec(BENCHCTL, ['report', String(seeded.experimentId), '--out', out], {
      env: env(),
    });
    assert.equal(stdout, `report: ${out}\n`);
    const html = await readFile(out, 'utf8');
    assert.match(html, /^<!DOCTYPE html>/);
    assert.ok(html.includes(`Experiment ${seeded.experimentId}`));
    assert.ok(html.includes(`http://ui.test:8233/namespaces/default/workflows/${seeded.workflows[0]}`));
    assert.ok(!html.includes(API_KEY));
    assert.ok((await stat(out)).size < 2_000_000);

    const piped = await exec(BENCHCTL, ['report', String(seeded.experimentId), '--out', '-'], {
      env: env(),
      maxBuffer: 64 * 1024 * 1024,
    });
    // `--out -`: the document alone on standard output.
    assert.match(piped.stdout, /^<!DOCTYPE html>[\s\S]*<\/html>\n$/);
    assert.ok(piped.stdout.includes(`Experiment ${seeded.experimentId}`));
  });

  test('an unknown experiment id exits non-zero with a clear message and writes nothing', async () => {
    const out = path.join(tmp, 'missing.html');
    await assert.rejects(
      exec(BENCHCTL, ['report', '987654321', '--out', out], { env: env() }),
      (err: { code?: number; stderr?: string }) => {
        assert.equal(err.code, 1);
        assert.equal(err.stderr, 'benchctl: experiment 987654321 not found\n');
        return true;
      },
    );
    await assert.rejects(stat(out), { code: 'ENOENT' });
    await assert.rejects(
      exec(BENCHCTL, ['report', 'abc'], { env: env() }),
      (err: { code?: number; stderr?: string }) => {
        assert.equal(err.code, 2);
        assert.match(err.stderr ?? '', /experimentId must be a positive integer, got "abc"/);
        return true;
      },
    );
  });
});
