import escapeHtml from 'escape-html';
import { CASE_STATUSES } from '../domain/case-status';
import type { ExperimentReport, ReportCase, ScorerSummary, TextExcerpt } from './experiment-report-model';
import { REPORT_LIMITS, type ReportLimits } from './report-limits';
import { SENTINEL_SCORE } from './experiment-report-summary';
import { clipExcerpt } from './text-excerpt';
import { renderCharts } from './report-charts';

/**
 * Renders a report model to one self-contained HTML document: inline CSS, no script, no external
 * asset, so it opens offline and can be mailed. Everything that comes from the database is
 * untrusted (agent output, logs, user-named things) and goes through `h()`; a Content-Security-
 * Policy that allows no script at all backs that up. The case filter is CSS-only (radio buttons);
 * the charts are inline SVG (report-charts.ts).
 */

interface RenderOptions {
  /** Link of a workflow in the Temporal Web UI; without it workflow ids are plain text. */
  workflowUrl?: (workflowId: string) => string;
  limits?: ReportLimits;
}

// eslint-disable-next-line no-control-regex -- control characters are what this removes
const CONTROL_CHARS = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]/g;

/** Escaped text for element content and double-quoted attributes. */
function h(value: string | number | null | undefined): string {
  if (value === null || value === undefined) return '';
  return escapeHtml(String(value).replace(CONTROL_CHARS, '\uFFFD'));
}

const KNOWN_STATUSES: ReadonlySet<string> = new Set(CASE_STATUSES);
/** A CSS class for a status; values outside the contract's set share one class. */
const statusClass = (status: string) => `st-${KNOWN_STATUSES.has(status) ? status : 'other'}`;

export function renderExperimentReport(report: ExperimentReport, opts: RenderOptions = {}): string {
  const limits = opts.limits ?? REPORT_LIMITS;
  const link = (workflowId: string | null): string => {
    if (!workflowId) return '';
    const url = opts.workflowUrl?.(workflowId);
    return url && /^https?:\/\//i.test(url)
      ? `<a href="${h(url)}" rel="noopener noreferrer">${h(workflowId)}</a>`
      : `<code>${h(workflowId)}</code>`;
  };
  const e = report.experiment;
  const title = `Experiment ${e.id}${e.name ? ` — ${e.name}` : ''}`;
  return [
    '<!DOCTYPE html>',
    '<html lang="en"><head><meta charset="utf-8">',
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'">`,
    '<meta name="referrer" content="no-referrer">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<meta name="generator" content="agentbench-orchestrator benchctl report">`,
    `<title>${h(title)} · agentbench report</title>`,
    `<style>${css(report)}</style>`,
    '</head><body>',
    `<header><h1>${h(title)}</h1><p class="sub">agentbench report generated ${h(fmtDate(report.generatedAt))}</p></header>`,
    renderOverview(report),
    renderStatusCounts(report),
    renderCharts(report, { ms: fmtDuration, score: fmtScore }),
    renderScorers(report.scorers, report),
    renderRuns(report, link),
    renderCases(report, limits, link),
    renderFooter(limits),
    '</body></html>',
    '',
  ].join('\n');
}

function renderOverview(report: ExperimentReport): string {
  const e = report.experiment;
  const agent = [e.agent.key, e.agent.version].filter((x) => x !== null).join(' ');
  const rows: Array<[string, string]> = [
    ['experiment', `${h(e.id)}${e.deleted ? ' <span class="warn">(deleted)</span>' : ''}`],
    ['name', h(e.name)],
    ['status', `<span class="qs qs-${h(e.queueStatus.replace(/[^a-z_]/g, ''))}">${h(e.queueStatus)}</span>`],
    [
      'agent',
      `<code>${h(agent || '–')}</code>${e.agent.name ? ` ${h(e.agent.name)}` : ''}${e.agent.id !== null ? ` <span class="dim">(id ${h(e.agent.id)})</span>` : ''}`,
    ],
    [
      'dataset',
      `${h(e.dataset.name ?? '–')}${e.dataset.id !== null ? ` <span class="dim">(id ${h(e.dataset.id)})</span>` : ''}`,
    ],
    ['triggered by', h(e.triggeredBy ?? '–')],
    ['created', h(fmtDate(e.createdAt))],
    ['queued', h(fmtDate(e.queuedAt))],
    ['started', h(fmtDate(e.startedAt))],
    ['finished', h(fmtDate(e.finishedAt))],
    ['duration', h(experimentDuration(report))],
    [
      'cases',
      `${h(report.totalCases)} latest${report.supersededAttempts > 0 ? ` <span class="dim">(+${h(report.supersededAttempts)} superseded attempts)</span>` : ''}`,
    ],
  ];
  return `<section id="overview"><dl class="meta">${rows.map(([k, v]) => `<dt>${h(k)}</dt><dd>${v}</dd>`).join('')}</dl></section>`;
}

function experimentDuration(report: ExperimentReport): string {
  const { startedAt, finishedAt } = report.experiment;
  if (!startedAt) return '–';
  if (finishedAt && finishedAt >= startedAt) return fmtDuration(finishedAt.getTime() - startedAt.getTime());
  return `${fmtDuration(Math.max(0, report.generatedAt.getTime() - startedAt.getTime()))} so far`;
}

/** Statuses in contract order, then any other value found. */
function orderedStatuses(counts: Record<string, number>): string[] {
  const known = CASE_STATUSES.filter((s) => (counts[s] ?? 0) > 0);
  const other = Object.keys(counts)
    .filter((s) => !KNOWN_STATUSES.has(s) && (counts[s] ?? 0) > 0)
    .sort();
  return [...known, ...other];
}

function renderStatusCounts(report: ExperimentReport): string {
  const statuses = orderedStatuses(report.statusCounts);
  const chips = statuses
    .map(
      (s) =>
        `<li class="chip ${statusClass(s)}"><span>${h(s)}</span> <b>${h(report.statusCounts[s] ?? 0)}</b></li>`,
    )
    .join('');
  return `<section id="statuses"><h2>Status</h2>${
    statuses.length ? `<ul class="chips">${chips}</ul>` : '<p class="dim">This experiment has no cases.</p>'
  }</section>`;
}

function renderScorers(scorers: ScorerSummary[], report: ExperimentReport): string {
  const head =
    '<tr><th>scorer</th><th>scores</th><th>verdicts</th><th>no verdict (−1)</th><th>mean</th><th>min</th><th>max</th><th>pass rate</th></tr>';
  const rows = scorers.map(
    (s) =>
      `<tr><td><code>${h(s.scorerKey)}</code></td><td class="num">${h(s.count)}</td><td class="num">${h(s.verdicts)}</td>` +
      `<td class="num">${h(s.sentinels)}</td><td class="num">${h(fmtScore(s.mean))}</td><td class="num">${h(fmtScore(s.min))}</td>` +
      `<td class="num">${h(fmtScore(s.max))}</td><td class="num">${s.passRate === null ? '–' : `${h(fmtPercent(s.passRate))} <span class="dim">(${h(s.passes)}/${h(s.verdicts)})</span>`}</td></tr>`,
  );
  const final =
    `<tr class="final"><td>final_score <span class="dim">(per case)</span></td><td class="num">${h(report.finalScoreCount)}</td>` +
    `<td class="num">–</td><td class="num">–</td><td class="num">${h(fmtScore(report.finalScoreMean))}</td><td></td><td></td><td></td></tr>`;
  return (
    `<section id="scores"><h2>Scores</h2>` +
    (scorers.length === 0 && report.finalScoreCount === 0
      ? '<p class="dim">No scores.</p>'
      : `<table class="grid"><thead>${head}</thead><tbody>${rows.join('')}${final}</tbody></table>`) +
    `<p class="note">Of the latest attempts. A judge answers 0, 0.5 or 1; −1 means no verdict (failed case, missing evaluator config, judge error or timeout) and is left out of mean, min, max and pass rate. A pass is a verdict of 1. final_score is the mean of a case's verdicts.</p></section>`
  );
}

function renderRuns(report: ExperimentReport, link: (id: string | null) => string): string {
  if (report.runs.length === 0) {
    return '<section id="runs"><h2>Runs</h2><p class="dim">No run of this experiment is recorded in agentbench_run_requests.</p></section>';
  }
  const rows = report.runs.map(
    (r) =>
      `<tr><td>${link(r.workflowId)}</td><td><code>${h(r.messageId)}</code></td><td>${h(fmtDate(r.createdAt))}</td><td class="num">${h(r.caseCount)}</td></tr>`,
  );
  return (
    `<section id="runs"><h2>Runs</h2><table class="grid"><thead><tr><th>workflow (Temporal UI)</th><th>message id</th><th>started</th><th>cases</th></tr></thead>` +
    `<tbody>${rows.join('')}</tbody></table></section>`
  );
}

function renderCases(
  report: ExperimentReport,
  limits: ReportLimits,
  link: (id: string | null) => string,
): string {
  if (report.cases.length === 0)
    return '<section id="cases"><h2>Cases</h2><p class="dim">No cases.</p></section>';
  const scorerKeys = report.scorers.map((s) => s.scorerKey);
  const statuses = orderedStatuses(report.statusCounts);
  const notSuccess = report.totalCases - (report.statusCounts.success ?? 0);
  const filters: Array<[string, string]> = [
    ['all', `all (${report.totalCases})`],
    ['problems', `not successful (${notSuccess})`],
    ...statuses.map((s): [string, string] => [statusClass(s), `${s} (${report.statusCounts[s] ?? 0})`]),
  ];
  // Statuses outside the contract share one class; offer that filter once.
  const uniqueFilters = filters.filter(([id], i) => filters.findIndex(([other]) => other === id) === i);
  const radios = uniqueFilters
    .map(
      ([id], i) =>
        `<input type="radio" name="case-filter" class="cf" id="cf-${h(id)}"${i === 0 ? ' checked' : ''}>`,
    )
    .join('');
  const labels = uniqueFilters.map(([id, label]) => `<label for="cf-${h(id)}">${h(label)}</label>`).join(' ');

  let budget = limits.detailsBudgetChars;
  const rows = report.cases.map((c) => {
    let details = c.details ? renderCaseDetails(c, limits, link) : null;
    if (details !== null) {
      if (details.length > budget) details = null;
      else budget -= details.length;
    }
    return renderCaseRow(c, scorerKeys, details, limits, link);
  });
  const head =
    '<tr><th>case</th><th>item</th><th>attempt</th><th>status</th><th>duration</th><th>exit</th>' +
    scorerKeys.map((k) => `<th class="score">${h(k)}</th>`).join('') +
    '<th>final</th><th>trajectory</th><th>error</th><th>output (click for details)</th><th>run</th></tr>';
  const more =
    report.casesNotShown > 0
      ? `<p class="warn">${h(report.casesNotShown)} more cases are not shown (at most ${h(limits.maxCaseRows)} rows; failures first).</p>`
      : '';
  return (
    `<section id="cases"><h2>Cases</h2>${radios}<div class="filters">Show: ${labels}</div>` +
    `<p class="note">Latest attempt per data item; failures first.</p>` +
    `<table class="grid cases"><thead>${head}</thead><tbody>${rows.join('\n')}</tbody></table>${more}</section>`
  );
}

function renderCaseRow(
  c: ReportCase,
  scorerKeys: string[],
  details: string | null,
  limits: ReportLimits,
  link: (id: string | null) => string,
): string {
  const scoreCells = scorerKeys.map((key) => {
    const mine = c.scores.filter((s) => s.scorerKey === key);
    if (mine.length === 0) return '<td class="num dim">–</td>';
    const cells = mine.map((s) => {
      const reason = clipExcerpt(s.reason, limits.previewChars);
      const title = reason.head + (reason.omitted > 0 ? '…' : '');
      return s.score === SENTINEL_SCORE
        ? `<span class="sentinel" title="${h(title)}">n/v</span>`
        : `<span title="${h(title)}">${h(fmtScore(s.score))}</span>`;
    });
    return `<td class="num">${cells.join(' ')}</td>`;
  });
  const trajectory =
    `<span title="${h(`steps from ${c.trajectorySource ?? 'unknown source'}`)}">${h(c.trajectorySteps ?? '–')} steps</span>` +
    ` · ${h(c.spanCount)} spans`;
  const outputPreview = c.outputPreview ? oneLine(c.outputPreview, limits.previewChars) : '';
  const summary = outputPreview ? h(outputPreview) : '<span class="dim">(no output)</span>';
  const outputCell = details
    ? `<details><summary>${summary}</summary>${details}</details>`
    : `${summary} <span class="note">(details left out: report size cap)</span>`;
  return (
    `<tr class="case ${statusClass(c.status)}" id="case-${h(c.runCaseId)}">` +
    `<td class="num">${h(c.runCaseId)}</td><td class="num">${h(c.dataItemId)}</td><td class="num">${h(c.attemptNo)}</td>` +
    `<td><span class="status ${statusClass(c.status)}">${h(c.status)}</span></td>` +
    `<td class="num">${h(caseDuration(c))}</td><td class="num">${h(c.exitCode ?? '–')}</td>` +
    scoreCells.join('') +
    `<td class="num">${h(fmtScore(c.finalScore))}</td><td>${trajectory}</td>` +
    `<td class="err">${c.errorPreview ? h(oneLine(c.errorPreview, limits.previewChars)) : ''}</td>` +
    `<td class="out">${outputCell}</td><td>${link(c.workflowId)}</td></tr>`
  );
}

function renderCaseDetails(c: ReportCase, limits: ReportLimits, link: (id: string | null) => string): string {
  const d = c.details;
  if (!d) return '';
  const parts: string[] = [];
  parts.push(
    `<h4>output</h4>${d.output ? textBlock(d.output, limits.outputChars) : '<p class="dim">none</p>'}`,
  );
  if (d.errorMessage) parts.push(`<h4>error</h4>${textBlock(d.errorMessage, limits.errorChars)}`);
  if (c.scores.length > 0) {
    const items = c.scores.map(
      (s) =>
        `<li><code>${h(s.scorerKey)}</code> ${s.score === SENTINEL_SCORE ? '<span class="sentinel">−1 (no verdict)</span>' : h(fmtScore(s.score))}: ${clippedInline(s.reason, limits.reasonChars)}</li>`,
    );
    parts.push(`<h4>scores</h4><ul class="reasons">${items.join('')}</ul>`);
  }
  const facts: Array<[string, string]> = [
    ['started', fmtDate(c.startedAt)],
    ['finished', fmtDate(c.finishedAt)],
    ['latency', c.latencyMs === null ? '–' : fmtDuration(c.latencyMs)],
    ['container phase', c.containerPhaseMs === null ? '–' : fmtDuration(c.containerPhaseMs)],
    ['tokens in / out', `${c.inputTokens ?? '–'} / ${c.outputTokens ?? '–'}`],
    [
      'trajectory',
      `${c.trajectorySteps ?? '–'} steps (${c.trajectorySource ?? 'unknown source'}), ${c.spanCount} spans stored`,
    ],
  ];
  parts.push(
    `<dl class="facts">${facts.map(([k, v]) => `<dt>${h(k)}</dt><dd>${h(v)}</dd>`).join('')}<dt>run</dt><dd>${link(c.workflowId) || '–'}</dd></dl>`,
  );
  if (d.logs) parts.push(`<h4>logs</h4>${textBlock(d.logs, limits.logsHeadChars, limits.logsTailChars)}`);
  return `<div class="case-details">${parts.join('')}</div>`;
}

/** A <pre> with the kept parts and, where something was cut, a visible marker saying how much. */
function textBlock(e: TextExcerpt, headChars: number, tailChars = 0): string {
  const c = clipExcerpt(e, headChars, tailChars);
  if (c.omitted === 0) return `<pre>${h(c.head)}</pre>`;
  const marker = `<span class="cut">[… truncated: ${h(c.omitted)} of ${h(e.totalChars)} characters not shown …]</span>`;
  // The marker is a block of its own inside the <pre>, so it needs no line breaks around it.
  return `<pre>${h(c.head)}${marker}${h(c.tail)}</pre>`;
}

function clippedInline(e: TextExcerpt, chars: number): string {
  const c = clipExcerpt(e, chars);
  return c.omitted === 0
    ? h(c.head)
    : `${h(c.head)}<span class="cut">[… truncated: ${h(c.omitted)} more characters]</span>`;
}

/** Whitespace folded, cut to `chars` with an ellipsis. */
function oneLine(e: TextExcerpt, chars: number): string {
  const c = clipExcerpt(e, chars);
  const flat = c.head.replace(/\s+/g, ' ').trim();
  return c.omitted > 0 ? `${flat}…` : flat;
}

function caseDuration(c: ReportCase): string {
  if (c.startedAt && c.finishedAt && c.finishedAt >= c.startedAt)
    return fmtDuration(c.finishedAt.getTime() - c.startedAt.getTime());
  return c.latencyMs === null ? '–' : fmtDuration(c.latencyMs);
}

function renderFooter(limits: ReportLimits): string {
  return (
    `<footer><p class="note">Long texts are cut with a marker: output after ${h(limits.outputChars)} characters, ` +
    `logs to their first ${h(limits.logsHeadChars)} and last ${h(limits.logsTailChars)}, error messages after ${h(limits.errorChars)}, ` +
    `judge reasons after ${h(limits.reasonChars)}; at most ${h(limits.maxCaseRows)} case rows and ` +
    `${h(limits.detailsBudgetChars)} characters of expandable details in all. ` +
    `Evaluator API keys and values of secret-named fields are replaced by [REDACTED].</p></footer>`
  );
}

function fmtDate(d: Date | null): string {
  if (!d || Number.isNaN(d.getTime())) return '–';
  return d
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d{3}Z$/, 'Z');
}

export function fmtDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const totalSeconds = Math.round(s);
  const hours = Math.floor(totalSeconds / 3600);
  const minutes = Math.floor((totalSeconds % 3600) / 60);
  const seconds = totalSeconds % 60;
  return hours > 0 ? `${hours} h ${minutes} min` : `${minutes} min ${seconds} s`;
}

function fmtScore(n: number | null): string {
  if (n === null || !Number.isFinite(n)) return '–';
  return String(Math.round(n * 1000) / 1000);
}

function fmtPercent(x: number): string {
  return `${(Math.round(x * 1000) / 10).toFixed(1)}%`;
}

function css(report: ExperimentReport): string {
  const filterRules = [
    '#cf-problems:checked ~ table.cases tbody tr.st-success{display:none}',
    ...orderedStatuses(report.statusCounts).map((s) => {
      const cls = statusClass(s);
      return `#cf-${cls}:checked ~ table.cases tbody tr:not(.${cls}){display:none}`;
    }),
    ...['all', 'problems', ...orderedStatuses(report.statusCounts).map(statusClass)].map(
      (id) =>
        `#cf-${id}:checked ~ .filters label[for="cf-${id}"]{background:#1f4f8b;color:#fff;border-color:#1f4f8b}`,
    ),
  ];
  return `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;padding:16px 24px;color:#1d232b;background:#fff;max-width:1800px}
h1{font-size:22px;margin:0 0 2px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #d8dde3;padding-bottom:4px}h4{margin:10px 0 4px;font-size:13px}
.sub,.dim{color:#68727d}.note{color:#68727d;font-size:12px}.warn{color:#a33c00}
code{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:12px 0}dl.meta dt,dl.facts dt{color:#68727d}dl.meta dd,dl.facts dd{margin:0}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;font-size:12px}
ul.chips{list-style:none;padding:0;margin:0;display:flex;flex-wrap:wrap;gap:8px}.chip{border:1px solid #d8dde3;border-radius:12px;padding:2px 10px}
table.grid{border-collapse:collapse;width:100%}table.grid th,table.grid td{border:1px solid #e1e5ea;padding:4px 6px;text-align:left;vertical-align:top}
table.grid th{background:#f3f5f7;font-weight:600;position:sticky;top:0}td.num{text-align:right;white-space:nowrap}
td.err{color:#a3002b;max-width:320px;overflow-wrap:anywhere}td.out{max-width:560px;overflow-wrap:anywhere}
summary{cursor:pointer}details[open] summary{font-weight:600}
.case-details{margin-top:6px}pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f8fa;border:1px solid #e1e5ea;padding:6px;margin:0;max-height:36em;overflow:auto;font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.cut{display:block;color:#a33c00;background:#fff4e5;font-style:italic;padding:2px 0}
.status{font-weight:600}.st-success .status,.chip.st-success b{color:#1a7f37}.st-failed .status,.st-timeout .status,.chip.st-failed b,.chip.st-timeout b{color:#cf222e}
.st-canceled .status,.chip.st-canceled b{color:#9a6700}.sentinel{color:#9a6700}
tr.st-failed td:first-child,tr.st-timeout td:first-child{box-shadow:inset 3px 0 #cf222e}
input.cf{position:absolute;opacity:0;pointer-events:none}
.filters{margin:6px 0}.filters label{display:inline-block;border:1px solid #c4ccd5;border-radius:12px;padding:1px 10px;margin:2px 2px;cursor:pointer}
ul.reasons{margin:0;padding-left:18px}
.charts{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}figure.chart{margin:0;border:1px solid #e1e5ea;border-radius:6px;padding:8px}figcaption{font-size:12px;color:#68727d;margin-bottom:4px}
${filterRules.join('\n')}
`;
}
