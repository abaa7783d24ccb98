import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { processingKey } from '../../bridge';
import { BridgeMetrics, createMetricsRegistry } from '../../src/metrics/orchestrator-metrics';
import { MetricsServer } from '../../src/metrics/metrics-server';
import { createLogger } from '../../src/logger';
import { httpGet, parseExposition, scrape, type Exposition } from '../support/prometheus-text';
import {
  forceCloseConnections,
  platformMessage,
  pollUntil,
  publishLikePlatform,
  recordingStartRun,
  startFixture,
} from './bridge-harness';

/**
 * The bridge's /metrics after real deliveries through RabbitMQ and Redis: each counter moves by
 * exactly what happened, with bounded labels only, and the exposition parses.
 */

const BRIDGE_LABELS: Record<string, string[]> = {
  agentbench_bridge_duplicates_total: ['reason'],
  agentbench_bridge_dead_lettered_total: ['code'],
};

/** No label but the declared ones; no label value that is a message id (unbounded series). */
function assertBoundedLabels(m: Exposition, ids: string[]): void {
  for (const s of m.samples.filter((x) => x.name.startsWith('agentbench_'))) {
    const allowed = BRIDGE_LABELS[s.name] ?? [];
    for (const [key, value] of Object.entries(s.labels)) {
      assert.ok(allowed.includes(key), `${s.name} has an unexpected label ${key}`);
      assert.ok(!ids.some((id) => value.includes(id)), `${s.name}{${key}="${value}"} carries an id`);
    }
  }
}

describe('bridge metrics over HTTP (real RabbitMQ + Redis)', () => {
  const log = createLogger({ level: 'silent' });
  let metrics: BridgeMetrics;
  let server: MetricsServer;
  let url: string;

  before(async () => {
    metrics = new BridgeMetrics(createMetricsRegistry());
    server = new MetricsServer({ registry: metrics.registry, log, host: '127.0.0.1', port: 0 });
    const { port } = await server.start();
    url = `http://127.0.0.1:${port}`;
  });

  after(async () => {
    await server?.stop();
  });

  /** Scrapes until `probe` accepts the exposition. */
  const scrapeUntil = (what: string, probe: (m: Exposition) => boolean) =>
    pollUntil(what, async () => {
      const m = await scrape(`${url}/metrics`);
      return probe(m) ? m : undefined;
    });

  test('received, started, start failures, both Redis duplicates and dead letters are counted once each', async () => {
    // The first delivery's start fails all 3 attempts (requeued); its redelivery starts the run.
    const { startRun, calls } = recordingStartRun((n) =>
      n <= 3 ? new Error('temporal unavailable') : undefined,
    );
    const fx = await startFixture({ startRun, metrics });
    const first = platformMessage(fx.queue);
    const second = platformMessage(fx.queue);
    try {
      fx.trackSuffix(first.message_id);
      fx.trackSuffix(second.message_id);
      let m = await scrapeUntil('bridge connected', (x) => x.value('agentbench_bridge_connected') === 1);
      assert.equal(m.value('agentbench_bridge_redis_degraded'), 0);
      assert.equal(m.value('agentbench_bridge_messages_received_total'), 0);

      await publishLikePlatform(fx.queue, JSON.stringify(first), first.message_id);
      await scrapeUntil('run started', (x) => x.value('agentbench_bridge_runs_started_total') === 1);
      assert.equal(calls.length, 4);

      await publishLikePlatform(fx.queue, JSON.stringify(first), first.message_id);
      await scrapeUntil(
        'processed duplicate',
        (x) => x.value('agentbench_bridge_duplicates_total', { reason: 'processed' }) === 1,
      );

      // The Python consumer holds the second message's lock: not ours to take over.
      await fx.redis.set(processingKey(second.message_id), 'python-consumer', 'EX', 60);
      await publishLikePlatform(fx.queue, JSON.stringify(second), second.message_id);
      await scrapeUntil(
        'processing duplicate',
        (x) => x.value('agentbench_bridge_duplicates_total', { reason: 'processing' }) === 1,
      );

      await publishLikePlatform(fx.queue, '{ not json');
      await publishLikePlatform(
        fx.queue,
        JSON.stringify({ message_type: 'experiment.run.requested', schema_version: 'v9' }),
      );
      await scrapeUntil(
        'dead letters',
        (x) => x.series('agentbench_bridge_dead_lettered_total').length === 2,
      );
      await fx.bridge.waitForIdle();
      m = await scrape(`${url}/metrics`);

      assert.equal(
        m.value('agentbench_bridge_messages_received_total'),
        6,
        'first ×2 (requeued once), its re-publish, second, two malformed',
      );
      assert.equal(m.value('agentbench_bridge_runs_started_total'), 1);
      assert.equal(m.value('agentbench_bridge_start_failures_total'), 1);
      assert.equal(m.value('agentbench_bridge_duplicates_total', { reason: 'processed' }), 1);
      assert.equal(m.value('agentbench_bridge_duplicates_total', { reason: 'processing' }), 1);
      assert.equal(m.value('agentbench_bridge_duplicates_total', { reason: 'workflow_exists' }), undefined);
      assert.equal(m.value('agentbench_bridge_dead_lettered_total', { code: 'E_MESSAGE_INVALID_JSON' }), 1);
      assert.equal(
        m.value('agentbench_bridge_dead_lettered_total', { code: 'E_UNSUPPORTED_SCHEMA_VERSION' }),
        1,
      );
      assert.equal(m.value('agentbench_bridge_deliveries_in_flight'), 0);
      assert.equal(m.value('agentbench_bridge_reconnects_total'), 0);
      assert.deepEqual(
        fx.bridge.stats(),
        { received: 6, started: 1, duplicates: 2, deadLettered: 2, reconnects: 0 },
        'metrics agree with the bridge’s own stats',
      );
      assert.equal(m.types.get('agentbench_bridge_runs_started_total'), 'counter');
      assert.equal(m.types.get('agentbench_bridge_connected'), 'gauge');
      assert.ok(
        (m.value('process_cpu_user_seconds_total') ?? 0) > 0,
        'default process metrics are served too',
      );
      assertBoundedLabels(m, [first.message_id, second.message_id, fx.queue]);

      await fx.bridge.stop();
      m = await scrape(`${url}/metrics`);
      assert.equal(m.value('agentbench_bridge_connected'), 0, 'a stopped bridge is not reported connected');
    } finally {
      await fx.cleanup();
    }
  });

  test('without Redis: redis_degraded is 1 and Temporal workflow-id dedup counts as workflow_exists', async () => {
    const local = new BridgeMetrics(createMetricsRegistry({ defaultMetrics: false }));
    const localServer = new MetricsServer({ registry: local.registry, log, host: '127.0.0.1', port: 0 });
    const { port } = await localServer.start();
    const { startRun } = recordingStartRun();
    const fx = await startFixture({ startRun, redis: null, metrics: local });
    try {
      const msg = platformMessage(fx.queue);
      await publishLikePlatform(fx.queue, JSON.stringify(msg), msg.message_id);
      await publishLikePlatform(fx.queue, JSON.stringify(msg), msg.message_id);
      const m = await pollUntil('workflow_exists duplicate', async () => {
        const x = await scrape(`http://127.0.0.1:${port}/metrics`);
        return x.value('agentbench_bridge_duplicates_total', { reason: 'workflow_exists' }) === 1
          ? x
          : undefined;
      });
      assert.equal(m.value('agentbench_bridge_runs_started_total'), 1);
      assert.equal(m.value('agentbench_bridge_redis_degraded'), 1);
      assert.equal(m.value('agentbench_bridge_connected'), 1);
    } finally {
      await fx.cleanup();
      await localServer.stop();
    }
  });

  test('a broker-side connection close is counted as one reconnect, and the bridge is connected again', async () => {
    const local = new BridgeMetrics(createMetricsRegistry({ defaultMetrics: false }));
    const { startRun } = recordingStartRun();
    const fx = await startFixture({ startRun, metrics: local });
    try {
      // Read straight from the registry: this test is about the counting, the HTTP side is covered above.
      const read = async () => parseExposition(await local.registry.metrics());
      await pollUntil('connected', async () => (await read()).value('agentbench_bridge_connected') === 1);
      assert.equal(await forceCloseConnections(fx.queue), 1);
      const m = await pollUntil('reconnected', async () => {
        const x = await read();
        return x.value('agentbench_bridge_reconnects_total') === 1 &&
          x.value('agentbench_bridge_connected') === 1
          ? x
          : undefined;
      });
      assert.equal(m.value('agentbench_bridge_messages_received_total'), 0);
    } finally {
      await fx.cleanup();
    }
  });

  test('the endpoint: /healthz answers, other paths 404, other methods 405, HEAD has no body', async () => {
    assert.deepEqual(
      [
        (await httpGet(`${url}/healthz`)).status,
        (await httpGet(`${url}/`)).status,
        (await httpGet(`${url}/metrics`, 'POST')).status,
      ],
      [200, 404, 405],
    );
    const head = await httpGet(`${url}/metrics`, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    assert.match(String(head.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  });
});
