import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Registry } from 'prom-client';
import { BridgeMetrics, WorkerMetrics } from '../../src/metrics/orchestrator-metrics';

const MONITORING = path.resolve(__dirname, '../../deploy/monitoring');

interface Target {
  expr: string;
  refId: string;
  datasource?: { uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { uid?: string };
  targets?: Target[];
  panels?: Panel[];
}

function dashboard(): { uid: string; panels: Panel[] } {
  return JSON.parse(readFileSync(path.join(MONITORING, 'grafana/dashboards/agentbench.json'), 'utf8')) as {
    uid: string;
    panels: Panel[];
  };
}

/** Every query panel, rows' nested panels included. */
function queryPanels(panels: Panel[]): Panel[] {
  return panels.flatMap((p) => (p.type === 'row' ? queryPanels(p.panels ?? []) : [p]));
}

const PROMQL_WORDS = new Set([
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'bool',
  'and',
  'or',
  'unless',
  'offset',
]);

/**
 * The metric names a PromQL expression selects: identifiers outside strings, label matchers, ranges
 * and groupings that are not functions, aggregations or keywords.
 */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\boffset\s+\S+/g, ' ');
  const names: string[] = [];
  // Not inside a number or duration (1e3, 0.5): an identifier starts after a non-word character.
  for (const m of bare.matchAll(/(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const after = bare.slice((m.index ?? 0) + m[0].length).trimStart();
    if (after.startsWith('(') || PROMQL_WORDS.has(m[0])) continue;
    names.push(m[0]);
  }
  return names;
}

/** The series names a registry exposes (histograms as their _bucket/_sum/_count series). */
async function exposedNames(registry: Registry): Promise<Set<string>> {
  const names = new Set<string>();
  for (const metric of await registry.getMetricsAsJSON()) {
    const type = String(metric.type);
    if (type === 'histogram')
      for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${metric.name}${suffix}`);
    else if (type === 'summary')
      for (const suffix of ['', '_sum', '_count']) names.add(`${metric.name}${suffix}`);
    else names.add(metric.name);
  }
  return names;
}

describe('the Grafana dashboard (deploy/monitoring) queries only metrics we export', () => {
  test('metricNames reads selectors, not functions, labels, ranges or groupings', () => {
    assert.deepEqual(
      metricNames(
        'histogram_quantile(0.95, sum by (le, activity) (rate(a_bucket{activity=~"x|y",outcome="ok"}[$__rate_interval]))) * 60',
      ),
      ['a_bucket'],
    );
    assert.deepEqual(metricNames('sum(b_total) / on (job) group_left c or d offset 5m'), [
      'b_total',
      'c',
      'd',
    ]);
  });

  test('every panel has queries, and each names only series of the worker’s or the bridge’s registry', async () => {
    const exported = new Set([
      ...(await exposedNames(new WorkerMetrics().registry)),
      ...(await exposedNames(new BridgeMetrics().registry)),
    ]);
    const panels = queryPanels(dashboard().panels);
    assert.ok(panels.length >= 10, `panels: ${panels.length}`);
    for (const panel of panels) {
      assert.ok((panel.targets ?? []).length > 0, `panel "${panel.title}" has no query`);
      for (const target of panel.targets ?? []) {
        const names = metricNames(target.expr);
        assert.ok(names.length > 0, `"${panel.title}" ${target.refId}: no metric in ${target.expr}`);
        for (const name of names)
          assert.ok(
            exported.has(name),
            `"${panel.title}" ${target.refId}: ${name} is not exported (${target.expr})`,
          );
      }
    }
  });

  test('what the issue asks to see is on it', () => {
    const exprs = queryPanels(dashboard().panels)
      .flatMap((p) => (p.targets ?? []).map((t) => t.expr))
      .join('\n');
    for (const needed of [
      'agentbench_cases_finished_total', // cases/min by status
      'histogram_quantile(0.5,', // latency p50 …
      'histogram_quantile(0.95,', // … and p95 by phase
      'agentbench_live_containers',
      'agentbench_docker_operations_in_use',
      'agentbench_otel_ingest_requests_total',
      'agentbench_bridge_messages_received_total',
      'agentbench_bridge_dead_lettered_total',
      'agentbench_bridge_duplicates_total',
      'process_resident_memory_bytes',
      'nodejs_eventloop_lag_p99_seconds',
    ])
      assert.ok(exprs.includes(needed), needed);
  });

  test('panels use the provisioned datasource; process panels filter by the scrape configs’ job names', () => {
    const datasources = readFileSync(
      path.join(MONITORING, 'grafana/provisioning/datasources/prometheus.yml'),
      'utf8',
    );
    const uid = /^\s+uid: (\S+)$/m.exec(datasources)?.[1];
    assert.ok(uid);
    const panels = queryPanels(dashboard().panels);
    for (const panel of panels) {
      assert.equal(panel.datasource?.uid, uid, panel.title);
      for (const target of panel.targets ?? [])
        assert.equal(target.datasource?.uid, uid, `${panel.title} ${target.refId}`);
    }
    const jobs = (file: string) =>
      [...readFileSync(path.join(MONITORING, file), 'utf8').matchAll(/job_name: (\S+)/g)].map((m) => m[1]);
    assert.deepEqual(jobs('prometheus.yml'), ['agentbench-worker', 'agentbench-bridge']);
    assert.deepEqual(jobs('prometheus-kubernetes.yml'), ['agentbench-worker', 'agentbench-bridge']);
    const filtered = panels
      .flatMap((p) => (p.targets ?? []).map((t) => t.expr))
      .filter((e) => e.includes('job=~'));
    assert.ok(filtered.length > 0);
    for (const expr of filtered) assert.match(expr, /job=~"agentbench-worker\|agentbench-bridge"/);
  });
});
