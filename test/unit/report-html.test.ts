import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { renderExperimentReport, fmtDuration } from '../../src/report/experiment-report-html';
import type { ExperimentReport, ReportCase } from '../../src/report/experiment-report-model';
import { latencyHistogram, numberStats, summarizeScores } from '../../src/report/experiment-report-summary';
import { REPORT_LIMITS } from '../../src/report/report-limits';
import { excerptOf } from '../../src/report/text-excerpt';

const HOSTILE = `</details></pre></td></tr></table><script>alert("x")</script><img src=x onerror='alert(1)'>&amp;`;

function reportCase(overrides: Partial<ReportCase> = {}): ReportCase {
  return {
    runCaseId: 901,
    dataItemId: 311,
    attemptNo: 1,
    status: 'success',
    startedAt: new Date('2026-03-02T08:00:00Z'),
    finishedAt: new Date('2026-03-02T08:00:02.500Z'),
    latencyMs: 2400,
    finalScore: 1,
    inputTokens: 10,
    outputTokens: 20,
    exitCode: 0,
    containerPhaseMs: 2300,
    workflowId: 'experiment-42-abc',
    trajectorySteps: 3,
    trajectorySource: 'spans',
    spanCount: 3,
    scores: [{ scorerKey: 'task_success', score: 1, reason: excerptOf('right') }],
    outputPreview: excerptOf('the answer'),
    errorPreview: null,
    details: { output: excerptOf('the answer'), errorMessage: null, logs: excerptOf('log line') },
    ...overrides,
  };
}

function report(overrides: Partial<ExperimentReport> = {}): ExperimentReport {
  const cases = overrides.cases ?? [reportCase()];
  const statusCounts: Record<string, number> = {};
  for (const c of cases) statusCounts[c.status] = (statusCounts[c.status] ?? 0) + 1;
  return {
    generatedAt: new Date('2026-03-02T09:00:00Z'),
    experiment: {
      id: 42,
      name: 'Weather QA',
      queueStatus: 'done',
      agent: { id: 5, key: 'weather-bot', version: 'v3', name: 'Weather Bot' },
      dataset: { id: 7, name: 'Weather set' },
      triggeredBy: 'user-7',
      createdAt: new Date('2026-03-02T07:59:00Z'),
      queuedAt: new Date('2026-03-02T07:59:30Z'),
      startedAt: new Date('2026-03-02T08:00:00Z'),
      finishedAt: new Date('2026-03-02T08:01:05Z'),
      deleted: false,
    },
    runs: [
      {
        workflowId: 'experiment-42-abc',
        messageId: 'abc',
        createdAt: new Date('2026-03-02T07:59:31Z'),
        caseCount: cases.length,
      },
    ],
    statusCounts,
    totalCases: cases.length,
    supersededAttempts: 0,
    latencyBins: [],
    attemptChanges: [],
    scorers: summarizeScores(
      cases.flatMap((c) => c.scores),
      ['task_success'],
    ),
    finalScoreMean: null,
    finalScoreCount: 0,
    cases,
    casesNotShown: 0,
    ...overrides,
  };
}

const uiLink = (id: string) => `http://127.0.0.1:8233/namespaces/default/workflows/${encodeURIComponent(id)}`;

/** The document without its <style> block, so CSS selectors do not count as markup found. */
const body = (html: string) => html.replace(/<style>[\s\S]*?<\/style>/, '');

describe('renderExperimentReport', () => {
  test('is one self-contained document: no script, no external asset, a CSP that forbids both', () => {
    const html = renderExperimentReport(report(), { workflowUrl: uiLink });
    assert.match(html, /^<!DOCTYPE html>/);
    assert.match(
      html,
      /<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'/,
    );
    assert.doesNotMatch(html, /<script/i);
    assert.doesNotMatch(html, /<link\b/i);
    assert.doesNotMatch(html, /\bsrc=/i);
    // The only URLs are the Temporal UI links.
    const urls = [...html.matchAll(/https?:\/\/[^\s"'<)]+/g)].map((m) => m[0]);
    assert.ok(urls.length > 0);
    for (const url of urls)
      assert.ok(url.startsWith('http://127.0.0.1:8233/namespaces/default/workflows/'), url);
  });

  test('shows the header, status counts, per-case facts and Temporal UI links', () => {
    const html = renderExperimentReport(
      report({
        cases: [
          reportCase(),
          reportCase({
            runCaseId: 902,
            status: 'failed',
            exitCode: 3,
            errorPreview: excerptOf('E_AGENT_EXIT_NON_ZERO: exit code 3'),
            scores: [],
          }),
        ],
      }),
      { workflowUrl: uiLink },
    );
    for (const text of [
      'Experiment 42 — Weather QA',
      'weather-bot v3',
      'Weather set',
      'user-7',
      '2026-03-02 08:00:00Z',
      '2026-03-02 08:01:05Z',
      '1 min 5 s',
    ]) {
      assert.ok(html.includes(text), text);
    }
    assert.match(html, /<li class="chip st-success"><span>success<\/span> <b>1<\/b><\/li>/);
    assert.match(html, /<li class="chip st-failed"><span>failed<\/span> <b>1<\/b><\/li>/);
    assert.ok(
      html.includes(
        '<a href="http://127.0.0.1:8233/namespaces/default/workflows/experiment-42-abc" rel="noopener noreferrer">experiment-42-abc</a>',
      ),
    );
    assert.ok(html.includes('E_AGENT_EXIT_NON_ZERO: exit code 3'));
    assert.match(html, /3 steps<\/span> · 3 spans/);
    // The CSS-only filter offers each status present.
    assert.ok(html.includes('<label for="cf-st-failed">failed (1)</label>'));
    assert.ok(html.includes('<label for="cf-problems">not successful (1)</label>'));
  });

  test('escapes hostile text wherever it lands', () => {
    const hostile = excerptOf(HOSTILE);
    const html = renderExperimentReport(
      report({
        experiment: { ...report().experiment, name: HOSTILE, triggeredBy: HOSTILE, queueStatus: HOSTILE },
        runs: [{ workflowId: HOSTILE, messageId: HOSTILE, createdAt: new Date(), caseCount: 1 }],
        cases: [
          reportCase({
            status: HOSTILE,
            workflowId: HOSTILE,
            trajectorySource: HOSTILE,
            outputPreview: hostile,
            errorPreview: hostile,
            scores: [{ scorerKey: HOSTILE, score: 0.5, reason: hostile }],
            details: { output: hostile, errorMessage: hostile, logs: hostile },
          }),
        ],
      }),
      { workflowUrl: uiLink },
    );
    const b = body(html);
    assert.doesNotMatch(b, /<script/i);
    assert.doesNotMatch(b, /<img/i);
    assert.doesNotMatch(b, /onerror='/);
    // Exactly the <details> the renderer opened and closed itself: one case, one of each.
    assert.equal(b.match(/<details>/g)?.length, 1);
    assert.equal(b.match(/<\/details>/g)?.length, 1);
    assert.equal(b.match(/<\/table>/g)?.length, 3);
    assert.ok(b.includes('&lt;/details&gt;&lt;/pre&gt;'));
    assert.ok(b.includes('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'));
    assert.ok(b.includes('onerror=&#39;alert(1)&#39;'));
    assert.ok(b.includes('&amp;amp;'));
    // In attributes too: a quote cannot end title="…" or href="…".
    assert.doesNotMatch(b, /title="[^"]*<script/);
    assert.ok(
      b.includes(
        `href="http://127.0.0.1:8233/namespaces/default/workflows/${encodeURIComponent(HOSTILE).replace(/'/g, '&#39;')}"`,
      ),
    );
    // An unknown status shares one CSS class instead of injecting its own.
    assert.ok(b.includes('class="case st-other"'));
  });

  test('removes control characters', () => {
    const html = renderExperimentReport(
      report({
        cases: [
          reportCase({
            details: { output: excerptOf('a\u0000b\u001bc\td\ne'), errorMessage: null, logs: null },
          }),
        ],
      }),
    );
    assert.ok(html.includes('a\uFFFDb\uFFFDc\td\ne'));
    assert.ok(!html.includes('\u0000') && !html.includes('\u001b'));
  });

  test('a workflow URL that is not http(s) is not made a link', () => {
    const html = renderExperimentReport(report(), { workflowUrl: () => 'javascript:alert(1)' });
    assert.doesNotMatch(html, /javascript:/);
    assert.ok(html.includes('<code>experiment-42-abc</code>'));
  });

  test('cuts long texts with a visible marker, keeping the start of output and both ends of logs', () => {
    const limits = {
      ...REPORT_LIMITS,
      outputChars: 100,
      logsHeadChars: 20,
      logsTailChars: 30,
      previewChars: 40,
    };
    const output = `OUT-START ${'o'.repeat(5000)} OUT-END`;
    const logs = `LOG-START ${'l'.repeat(5000)} LOG-END`;
    const html = renderExperimentReport(
      report({
        cases: [
          reportCase({
            outputPreview: excerptOf(output),
            details: { output: excerptOf(output), errorMessage: null, logs: excerptOf(logs) },
          }),
        ],
      }),
      { limits },
    );
    assert.ok(html.includes('OUT-START'));
    assert.ok(!html.includes('OUT-END'));
    assert.ok(
      html.includes(`[… truncated: ${output.length - 100} of ${output.length} characters not shown …]`),
    );
    assert.ok(html.includes('LOG-START'));
    assert.ok(html.includes('LOG-END'));
    assert.ok(html.includes(`[… truncated: ${logs.length - 50} of ${logs.length} characters not shown …]`));
    // The table preview is one line with an ellipsis.
    assert.ok(html.includes(`<summary>OUT-START ${'o'.repeat(30)}…</summary>`));
  });

  test('an excerpt the loader already cut shows what it never fetched as omitted', () => {
    const html = renderExperimentReport(
      report({
        cases: [
          reportCase({
            details: {
              output: null,
              errorMessage: null,
              logs: { head: 'first part', tail: 'last part', totalChars: 1_000_000 },
            },
          }),
        ],
      }),
    );
    assert.ok(
      html.includes(
        `first part<span class="cut">[… truncated: ${1_000_000 - 19} of 1000000 characters not shown …]</span>last part`,
      ),
    );
  });

  test('the details budget leaves later cases with their row only', () => {
    const big = excerptOf('x'.repeat(3000));
    const cases = [1, 2, 3].map((i) =>
      reportCase({ runCaseId: i, details: { output: big, errorMessage: null, logs: null } }),
    );
    const html = renderExperimentReport(report({ cases }), {
      limits: { ...REPORT_LIMITS, detailsBudgetChars: 7000 },
    });
    assert.equal(html.match(/<details>/g)?.length, 2);
    assert.equal(html.match(/details left out: report size cap/g)?.length, 1);
  });

  test('an experiment without cases, runs or scores still renders', () => {
    const html = renderExperimentReport(
      report({
        cases: [],
        runs: [],
        scorers: [],
        experiment: {
          ...report().experiment,
          startedAt: null,
          finishedAt: null,
          agent: { id: null, key: null, version: null, name: null },
          dataset: { id: null, name: null },
        },
      }),
    );
    assert.ok(html.includes('This experiment has no cases.'));
    assert.ok(html.includes('No scores.'));
    assert.ok(html.includes('No run of this experiment is recorded'));
    assert.ok(html.includes('<p class="dim">No cases.</p>'));
    assert.match(html, /<\/html>\n$/);
  });

  test('says how many cases are not shown', () => {
    const html = renderExperimentReport(report({ casesNotShown: 12 }));
    assert.ok(html.includes('12 more cases are not shown'));
  });
});

describe('score summary', () => {
  test('mean, min, max and pass rate over verdicts; sentinels counted apart', () => {
    const [s] = summarizeScores(
      [
        { scorerKey: 'judge', score: 1 },
        { scorerKey: 'judge', score: 0.5 },
        { scorerKey: 'judge', score: 0 },
        { scorerKey: 'judge', score: 1 },
        { scorerKey: 'judge', score: -1 },
      ],
      ['judge'],
    );
    assert.deepEqual(s, {
      scorerKey: 'judge',
      count: 5,
      verdicts: 4,
      sentinels: 1,
      mean: 0.625,
      min: 0,
      max: 1,
      passes: 2,
      passRate: 0.5,
      distribution: [
        { score: -1, count: 1 },
        { score: 0, count: 1 },
        { score: 0.5, count: 1 },
        { score: 1, count: 2 },
      ],
    });
  });

  test('configured scorers come first even without scores; others follow alphabetically', () => {
    const summaries = summarizeScores(
      [
        { scorerKey: 'zeta', score: 1 },
        { scorerKey: 'alpha', score: -1 },
      ],
      ['configured'],
    );
    assert.deepEqual(
      summaries.map((s) => [s.scorerKey, s.count, s.verdicts, s.mean, s.passRate]),
      [
        ['configured', 0, 0, null, null],
        ['alpha', 1, 0, null, null],
        ['zeta', 1, 1, 1, 1],
      ],
    );
  });

  test('rendered with rounding and the pass count', () => {
    const scorers = summarizeScores(
      [1, 0.5, 0, -1].map((score) => ({ scorerKey: 'task_success', score })),
      ['task_success'],
    );
    const html = renderExperimentReport(report({ scorers, finalScoreMean: 2 / 3, finalScoreCount: 3 }));
    assert.ok(
      html.includes(
        '<tr><td><code>task_success</code></td><td class="num">4</td><td class="num">3</td><td class="num">1</td><td class="num">0.5</td><td class="num">0</td><td class="num">1</td><td class="num">33.3% <span class="dim">(1/3)</span></td></tr>',
      ),
    );
    assert.match(
      html,
      /final_score <span class="dim">\(per case\)<\/span><\/td><td class="num">3<\/td><td class="num">–<\/td><td class="num">–<\/td><td class="num">0.667<\/td>/,
    );
    // A sentinel in the case table says "no verdict", not a score of −1.
    const withSentinel = renderExperimentReport(
      report({
        cases: [
          reportCase({
            scores: [
              { scorerKey: 'task_success', score: -1, reason: excerptOf('E_SCORE_DEFAULT_RUN_CASE_FAILED') },
            ],
          }),
        ],
      }),
    );
    assert.ok(
      withSentinel.includes('<span class="sentinel" title="E_SCORE_DEFAULT_RUN_CASE_FAILED">n/v</span>'),
    );
  });

  test('numberStats of nothing is null', () => {
    assert.equal(numberStats([]), null);
    assert.deepEqual(numberStats([2, 4]), { mean: 3, min: 2, max: 4 });
  });

  test('durations', () => {
    assert.equal(fmtDuration(850), '850 ms');
    assert.equal(fmtDuration(2500), '2.50 s');
    assert.equal(fmtDuration(65_000), '1 min 5 s');
    assert.equal(fmtDuration(3_725_000), '1 h 2 min');
  });
});

describe('report charts', () => {
  test('latency histogram: equal-width bins covering min to max, every value counted once', () => {
    const bins = latencyHistogram([100, 150, 200, 1000, 1000, 1300], 4);
    assert.equal(bins.length, 4);
    assert.equal(bins[0]?.fromMs, 100);
    assert.equal(bins[3]?.toMs, 1300);
    assert.deepEqual(
      bins.map((b) => b.count),
      [3, 0, 0, 3],
    );
    assert.deepEqual(latencyHistogram([]), []);
    assert.deepEqual(
      latencyHistogram([5, 5, 5]).map((b) => [b.fromMs, b.count]),
      [[5, 3]],
    );
  });

  test('score distribution counts each value, the sentinel included', () => {
    const [s] = summarizeScores([1, 0.5, 1, -1].map((score) => ({ scorerKey: 'k', score })));
    assert.deepEqual(s?.distribution, [
      { score: -1, count: 1 },
      { score: 0.5, count: 1 },
      { score: 1, count: 2 },
    ]);
  });

  test('charts are inline SVG with escaped labels; the attempt chart only for a rerun', () => {
    const hostileKey = '<script>x</script>';
    const base = report({
      cases: [reportCase({ scores: [{ scorerKey: hostileKey, score: 1, reason: excerptOf('ok') }] })],
    });
    const html = renderExperimentReport({ ...base, latencyBins: [{ fromMs: 0, toMs: 10, count: 1 }] });
    assert.match(html, /<section id="charts">.*<svg [^>]*role="img" aria-label="status breakdown"/s);
    assert.ok(html.includes('aria-label="latency histogram"'));
    assert.ok(html.includes('Scores of &lt;script&gt;x&lt;/script&gt;'));
    assert.ok(!html.includes('<script'));
    assert.ok(!html.includes('id="chart-attempts"'));
    const rerun = renderExperimentReport({
      ...base,
      attemptChanges: [{ from: 'failed', to: 'success', count: 2 }],
    });
    assert.match(rerun, /id="chart-attempts".*failed → success/s);
  });
});
