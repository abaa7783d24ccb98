import escapeHtml from 'escape-html';
import { CASE_STATUSES } from '../domain/case-status';
import type { AttemptChange, ExperimentReport, LatencyBin, ScorerSummary } from './experiment-report-model';
import { SENTINEL_SCORE } from './experiment-report-summary';

/**
 * The report's charts as inline SVG: drawn by the browser from markup alone (no script, no external
 * asset), so the report's CSP stays `default-src 'none'`. Every label comes from the database and
 * is escaped. Fill colours are used by nothing else in the report (test/integration/report-charts
 * finds each chart in a screenshot by them).
 */

export const CHART_COLOURS = {
  status: {
    pending: '#b6bec8',
    queued: '#8d99a6',
    running: '#4c8df6',
    trajectory: '#7a5af8',
    scoring: '#b083f0',
    success: '#2da44e',
    failed: '#e5534b',
    timeout: '#f08c2e',
    canceled: '#d4a72c',
    other: '#57606a',
  } as Record<string, string>,
  latency: '#1f77b4',
  score: '#9467bd',
  sentinel: '#bcbd22',
  improved: '#2ca02c',
  worse: '#d62728',
  unchanged: '#7f7f7f',
} as const;

const W = 520;
const FONT = 'font-family="system-ui,sans-serif" font-size="11" fill="#1d232b"';

function t(value: string | number): string {
  return escapeHtml(String(value));
}

function svg(height: number, label: string, body: string): string {
  return `<svg width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" role="img" aria-label="${t(label)}">${body}</svg>`;
}

function figure(id: string, title: string, body: string): string {
  return `<figure class="chart" id="${id}"><figcaption>${t(title)}</figcaption>${body}</figure>`;
}

function statusColour(status: string): string {
  return CHART_COLOURS.status[status] ?? CHART_COLOURS.status.other ?? '#57606a';
}

/** One stacked bar of the latest cases by status, with a legend. */
function statusChart(counts: Record<string, number>): string {
  const known: string[] = CASE_STATUSES.filter((s) => (counts[s] ?? 0) > 0);
  const statuses = [
    ...known,
    ...Object.keys(counts)
      .filter((s) => !known.includes(s) && (counts[s] ?? 0) > 0)
      .sort(),
  ];
  const total = statuses.reduce((sum, s) => sum + (counts[s] ?? 0), 0);
  if (total === 0) return '';
  const barW = W - 20;
  let x = 10;
  const bars = statuses.map((s) => {
    const w = ((counts[s] ?? 0) / total) * barW;
    const rect = `<rect x="${x.toFixed(2)}" y="10" width="${w.toFixed(2)}" height="36" fill="${statusColour(s)}"><title>${t(s)}: ${t(counts[s] ?? 0)}</title></rect>`;
    x += w;
    return rect;
  });
  const legend = statuses.map((s, i) => {
    const lx = 10 + (i % 4) * 125;
    const ly = 62 + Math.floor(i / 4) * 18;
    const pct = Math.round(((counts[s] ?? 0) / total) * 1000) / 10;
    return `<rect x="${lx}" y="${ly}" width="10" height="10" fill="${statusColour(s)}"/><text x="${lx + 14}" y="${ly + 9}" ${FONT}>${t(s)} ${t(counts[s] ?? 0)} (${t(pct)}%)</text>`;
  });
  const height = 62 + Math.ceil(statuses.length / 4) * 18 + 4;
  return figure(
    'chart-status',
    'Status of the latest cases',
    svg(height, 'status breakdown', bars.join('') + legend.join('')),
  );
}

/** Vertical bars over equal-width latency bins. */
function latencyChart(bins: LatencyBin[], fmtMs: (ms: number) => string): string {
  if (bins.length === 0) return '';
  const top = Math.max(...bins.map((b) => b.count), 1);
  const h = 150;
  const x0 = 36;
  const plotW = W - x0 - 10;
  const bw = plotW / bins.length;
  const bars = bins.map((b, i) => {
    const bh = (b.count / top) * h;
    return `<rect x="${(x0 + i * bw + 1).toFixed(2)}" y="${(10 + h - bh).toFixed(2)}" width="${Math.max(1, bw - 2).toFixed(2)}" height="${bh.toFixed(2)}" fill="${CHART_COLOURS.latency}"><title>${t(fmtMs(b.fromMs))} – ${t(fmtMs(b.toMs))}: ${t(b.count)}</title></rect>`;
  });
  const first = bins[0] as LatencyBin;
  const last = bins[bins.length - 1] as LatencyBin;
  const axes =
    `<line x1="${x0}" y1="${10 + h}" x2="${W - 10}" y2="${10 + h}" stroke="#68727d"/>` +
    `<text x="${x0 - 4}" y="16" text-anchor="end" ${FONT}>${t(top)}</text><text x="${x0 - 4}" y="${10 + h}" text-anchor="end" ${FONT}>0</text>` +
    `<text x="${x0}" y="${h + 26}" ${FONT}>${t(fmtMs(first.fromMs))}</text>` +
    `<text x="${W - 10}" y="${h + 26}" text-anchor="end" ${FONT}>${t(fmtMs(last.toMs))}</text>`;
  const n = bins.reduce((sum, b) => sum + b.count, 0);
  return figure(
    'chart-latency',
    `Latency of the latest cases (${n} with a latency)`,
    svg(h + 34, 'latency histogram', bars.join('') + axes),
  );
}

/** Bars per score value of one scorer; the no-verdict sentinel in its own colour. */
function scoreChart(scorer: ScorerSummary, fmtScore: (n: number) => string): string {
  if (scorer.distribution.length === 0) return '';
  const top = Math.max(...scorer.distribution.map((d) => d.count), 1);
  const h = 110;
  const slot = Math.min(90, (W - 20) / scorer.distribution.length);
  const bars = scorer.distribution.map((d, i) => {
    const bh = (d.count / top) * h;
    const x = 10 + i * slot;
    const label = d.score === SENTINEL_SCORE ? 'n/v (−1)' : fmtScore(d.score);
    const fill = d.score === SENTINEL_SCORE ? CHART_COLOURS.sentinel : CHART_COLOURS.score;
    return (
      `<rect x="${(x + 6).toFixed(2)}" y="${(14 + h - bh).toFixed(2)}" width="${(slot - 12).toFixed(2)}" height="${bh.toFixed(2)}" fill="${fill}"><title>${t(label)}: ${t(d.count)}</title></rect>` +
      `<text x="${(x + slot / 2).toFixed(2)}" y="${(12 + h - bh).toFixed(2)}" text-anchor="middle" ${FONT}>${t(d.count)}</text>` +
      `<text x="${(x + slot / 2).toFixed(2)}" y="${h + 28}" text-anchor="middle" ${FONT}>${t(label)}</text>`
    );
  });
  return figure(
    `chart-score-${t(scorer.scorerKey.replace(/[^A-Za-z0-9_-]/g, '_'))}`,
    `Scores of ${scorer.scorerKey}`,
    svg(
      h + 36,
      `score distribution of ${scorer.scorerKey}`,
      `<line x1="10" y1="${14 + h}" x2="${W - 10}" y2="${14 + h}" stroke="#68727d"/>${bars.join('')}`,
    ),
  );
}

function changeColour(c: AttemptChange): string {
  if (c.from === c.to) return CHART_COLOURS.unchanged;
  if (c.to === 'success') return CHART_COLOURS.improved;
  if (c.from === 'success') return CHART_COLOURS.worse;
  return CHART_COLOURS.unchanged;
}

/** For a rerun: horizontal bars, one per (previous attempt's status → latest attempt's status). */
function attemptChangeChart(changes: AttemptChange[]): string {
  if (changes.length === 0) return '';
  const top = Math.max(...changes.map((c) => c.count), 1);
  const labelW = 190;
  const barMax = W - labelW - 50;
  const rows = changes.map((c, i) => {
    const y = 8 + i * 26;
    const bw = Math.max(2, (c.count / top) * barMax);
    return (
      `<text x="${labelW - 8}" y="${y + 14}" text-anchor="end" ${FONT}>${t(c.from)} → ${t(c.to)}</text>` +
      `<rect x="${labelW}" y="${y}" width="${bw.toFixed(2)}" height="20" fill="${changeColour(c)}"><title>${t(c.from)} → ${t(c.to)}: ${t(c.count)}</title></rect>` +
      `<text x="${(labelW + bw + 6).toFixed(2)}" y="${y + 14}" ${FONT}>${t(c.count)}</text>`
    );
  });
  return figure(
    'chart-attempts',
    'Rerun: previous attempt → latest attempt',
    svg(16 + changes.length * 26, 'attempt-over-attempt change', rows.join('')),
  );
}

/** The charts section; empty when there is nothing to draw. */
export function renderCharts(
  report: ExperimentReport,
  fmt: { ms: (ms: number) => string; score: (n: number) => string },
): string {
  const charts = [
    statusChart(report.statusCounts),
    latencyChart(report.latencyBins, fmt.ms),
    ...report.scorers.map((s) => scoreChart(s, fmt.score)),
    attemptChangeChart(report.attemptChanges),
  ].filter((c) => c !== '');
  if (charts.length === 0) return '';
  return `<section id="charts"><h2>Charts</h2><div class="charts">${charts.join('')}</div></section>`;
}
