import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Connection } from '@temporalio/client';
import { loadConfig } from '../../src/config';
import { createDockerClient } from '../../src/docker/docker-client';
import { createPool } from '../../src/db/pool';
import { createLogger } from '../../src/logger';
import { dockerCheck, postgresCheck, temporalCheck } from '../../src/metrics/dependency-checks';
import { MetricsServer } from '../../src/metrics/metrics-server';
import { createMetricsRegistry } from '../../src/metrics/orchestrator-metrics';
import { Readiness, type ReadinessReport } from '../../src/metrics/readiness';
import { createTestDatabase, type TestDatabase } from '../support/database';
import { httpGet } from '../support/prometheus-text';
import { freePort } from '../support/ports';
import { localTestEnv } from '../support/stack';

const log = createLogger({ level: 'silent' });

describe('/readyz and /healthz on the metrics endpoint, with the real dependency checks', () => {
  let db: TestDatabase;
  let temporal: Connection;
  const servers: MetricsServer[] = [];
  const closers: Array<() => Promise<unknown>> = [];

  before(async () => {
    db = await createTestDatabase({ migrate: false });
    temporal = await Connection.connect({ address: localTestEnv().TEMPORAL_ADDRESS });
  });

  after(async () => {
    await Promise.all(servers.map((s) => s.stop()));
    for (const close of closers) await close();
    await temporal?.close();
    await db?.drop();
  });

  async function serve(readiness: Readiness): Promise<string> {
    const server = new MetricsServer({
      registry: createMetricsRegistry({ defaultMetrics: false }),
      log,
      host: '127.0.0.1',
      port: 0,
      readiness,
    });
    servers.push(server);
    const { port } = await server.start();
    return `http://127.0.0.1:${port}`;
  }

  async function readyz(
    origin: string,
  ): Promise<{ status: number; report: ReadinessReport; cacheControl: unknown }> {
    const res = await httpGet(`${origin}/readyz`);
    assert.equal(res.headers['content-type'], 'application/json');
    return {
      status: res.status,
      report: JSON.parse(res.body) as ReadinessReport,
      cacheControl: res.headers['cache-control'],
    };
  }

  test('starting → ready (Temporal, Postgres, Docker answer) → stopping; /healthz is 200 throughout', async () => {
    const readiness = new Readiness(3000);
    const origin = await serve(readiness);
    assert.deepEqual((await readyz(origin)).report, { status: 'starting', checks: {} });
    assert.equal((await readyz(origin)).status, 503);
    assert.equal((await httpGet(`${origin}/healthz`)).status, 200);

    readiness.serve({
      temporal: temporalCheck(temporal, 3000),
      postgres: postgresCheck(db.pool),
      docker: dockerCheck(createDockerClient(loadConfig(localTestEnv()).docker.socketPath), 3000),
    });
    const ready = await readyz(origin);
    assert.equal(ready.status, 200);
    assert.equal(ready.cacheControl, 'no-store');
    assert.deepEqual(ready.report, {
      status: 'ready',
      checks: { temporal: { ok: true }, postgres: { ok: true }, docker: { ok: true } },
    });
    assert.equal((await httpGet(`${origin}/readyz`, 'HEAD')).status, 200);

    readiness.markStopping();
    assert.deepEqual(await readyz(origin), {
      status: 503,
      report: { status: 'stopping', checks: {} },
      cacheControl: 'no-store',
    });
    assert.equal((await httpGet(`${origin}/healthz`)).body, 'ok\n', 'liveness never looks at dependencies');
  });

  test('a dependency that is down makes it 503 and names it; a hung one is cut at the timeout', async () => {
    const deadPool = createPool(
      `postgres://agentbench:agentbench@127.0.0.1:${await freePort()}/agentbench`,
      1,
      log,
    );
    closers.push(() => deadPool.end());
    const deadTemporal = await Connection.lazy({ address: `127.0.0.1:${await freePort()}` });
    closers.push(() => deadTemporal.close());
    // The connection is closed only once its call has failed by itself (its deadline), not while
    // the SDK is still trying: a close then would fail that attempt outside any test.
    const checkTemporal = temporalCheck(deadTemporal, 500);
    let temporalCall: Promise<void> = Promise.resolve();
    const readiness = new Readiness(1000);
    readiness.serve({
      temporal: () => (temporalCall = checkTemporal()),
      postgres: postgresCheck(deadPool),
      docker: dockerCheck(createDockerClient('/nonexistent/docker.sock'), 1000),
      hung: () => new Promise<void>(() => undefined),
      fine: postgresCheck(db.pool),
    });
    const origin = await serve(readiness);
    const started = Date.now();
    const { status, report } = await readyz(origin);
    assert.ok(Date.now() - started < 4000, 'checks run at once, each bounded by the timeout');
    assert.equal(status, 503);
    assert.equal(report.status, 'not_ready');
    assert.deepEqual(report.checks.fine, { ok: true });
    assert.match(report.checks.postgres?.error ?? '', /ECONNREFUSED/);
    assert.equal(report.checks.docker?.error, 'the Docker daemon does not answer');
    assert.equal(report.checks.hung?.error, 'no answer within 1000 ms');
    assert.equal(report.checks.temporal?.ok, false);
    await temporalCall.catch(() => undefined);
    assert.ok(!JSON.stringify(report).includes('agentbench:agentbench'), 'no credentials in the answer');
  });

  test('probes arriving together share one round of checks; a later probe checks again', async () => {
    let rounds = 0;
    let release: () => void = () => undefined;
    const readiness = new Readiness(5000);
    readiness.serve({
      counted: () => {
        rounds += 1;
        return new Promise<void>((resolve) => (release = resolve));
      },
    });
    const together = [readiness.report(), readiness.report(), readiness.report()];
    release();
    const answers = await Promise.all(together);
    assert.deepEqual(
      answers.map((a) => a.status),
      ['ready', 'ready', 'ready'],
    );
    assert.equal(rounds, 1);
    const later = readiness.report();
    release();
    assert.equal((await later).status, 'ready');
    assert.equal(rounds, 2, 'nothing is cached');
  });

  test('without a readiness, /readyz is not served', async () => {
    const server = new MetricsServer({
      registry: createMetricsRegistry({ defaultMetrics: false }),
      log,
      host: '127.0.0.1',
      port: 0,
    });
    servers.push(server);
    const { port } = await server.start();
    assert.equal((await httpGet(`http://127.0.0.1:${port}/readyz`)).status, 404);
  });
});
