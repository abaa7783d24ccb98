import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { amqpUrl } from '../../src/config';
import { createLogger } from '../../src/logger';
import { ResultEventRelay } from '../../src/result-events/result-event-relay';
import { READ_TOKEN, readEventStream, startTestApi, WRITE_TOKEN, type TestApi } from '../support/api';
import { seedExperiment } from '../support/database';
import { assertValidResultEvent, bindResultQueue, type ReceivedResultEvent } from '../support/result-events';
import { eventually, managedContainers, startStack, type Stack } from '../support/stack';

const SAMPLE = path.resolve(__dirname, '../../examples/sample-experiment.json');

interface RunBody {
  run_id: string;
  workflow_id: string;
  experiment_id: number;
  status: string;
  links: { self: string; cases: string; events: string; cancel: string; temporal_ui: string };
}

describe('benchctl api against the real chain (Temporal, worker, Postgres, RabbitMQ)', () => {
  let stack: Stack;
  let api: TestApi;
  let relay: ResultEventRelay;
  let queue: Awaited<ReturnType<typeof bindResultQueue>>;
  const tag = randomBytes(4).toString('hex');
  const exchange = `agentbench.results.test-${tag}`;
  const received: ReceivedResultEvent[] = [];
  const collect = async () => {
    received.push(...(await queue.drain()));
    return received;
  };

  before(async () => {
    stack = await startStack();
    api = await startTestApi(stack);
    queue = await bindResultQueue(amqpUrl(stack.config), exchange, `agentbench-test-api-results-${tag}`);
    relay = new ResultEventRelay({
      pool: stack.db.pool,
      amqpUrl: amqpUrl(stack.config),
      exchange,
      deploymentId: stack.config.deploymentId,
      log: createLogger({ level: 'silent' }),
      retentionDays: 7,
      idleMs: 50,
    });
    relay.start();
  });
  after(async () => {
    await relay?.stop();
    await queue?.delete();
    await api?.stop();
    await stack?.stop();
  });

  test('the sample experiment over HTTP: 202, its events stream to the end, its cases, one result event per case and one per run', async () => {
    const sample = JSON.parse(await readFile(SAMPLE, 'utf8')) as { dataset: { items: unknown[] } };
    const cases = sample.dataset.items.length;
    const res = await api.call('POST', '/v1/runs', { body: sample });
    assert.equal(res.status, 202, await res.text());
    const run = (await res.json()) as RunBody;
    assert.equal(run.status, 'queued');
    assert.equal(run.run_id, run.workflow_id);
    assert.equal(res.headers.get('location'), run.links.self);
    assert.match(run.links.temporal_ui, /\/workflows\//);

    const events = await readEventStream(`${api.baseUrl}${run.links.events}`, READ_TOKEN);
    const last = events[events.length - 1];
    assert.equal(last?.event, 'run', 'the stream ends with the run');
    assert.equal((last?.data as { status: string }).status, 'done');
    const caseEvents = events
      .filter((e) => e.event === 'case')
      .map((e) => e.data as { run_case_id: number; status: string });
    const caseIds = [...new Set(caseEvents.map((e) => e.run_case_id))];
    assert.equal(caseIds.length, cases);
    for (const id of caseIds) {
      const mine = caseEvents.filter((e) => e.run_case_id === id).map((e) => e.status);
      assert.equal(mine[mine.length - 1], 'success', `case ${id} ends in success: ${mine.join(' → ')}`);
      assert.equal(new Set(mine).size, mine.length, `one event per status change: ${mine.join(' → ')}`);
    }
    assert.deepEqual(
      events.map((e) => Number(e.id)),
      events.map((_, i) => i + 1),
    );

    const got = await api.call('GET', run.links.self, { token: READ_TOKEN });
    assert.equal(got.status, 200);
    const body = (await got.json()) as {
      status: string;
      cases: Record<string, number>;
      finished_at: string | null;
      started_at: string | null;
    };
    assert.equal(body.status, 'done');
    assert.equal(body.cases.total, cases);
    assert.equal(body.cases.success, cases);
    assert.ok(body.finished_at && body.started_at);

    // Paginated, in message order, and filterable.
    const page1 = (await (await api.call('GET', `${run.links.cases}?limit=3`)).json()) as {
      items: Array<{
        run_case_id: number;
        status: string;
        output: unknown;
        latency_ms: number;
        error_code: string | null;
      }>;
      next_cursor: string | null;
    };
    assert.equal(page1.items.length, 3);
    assert.ok(page1.next_cursor);
    const page2 = (await (
      await api.call('GET', `${run.links.cases}?limit=3&cursor=${page1.next_cursor}`)
    ).json()) as typeof page1;
    assert.equal(page2.next_cursor, null);
    const all = [...page1.items, ...page2.items];
    assert.deepEqual(
      all.map((c) => c.output),
      ['4', '42', '7', '3'],
    );
    for (const c of all) {
      assert.equal(c.status, 'success');
      assert.equal(c.error_code, null);
      assert.ok(c.latency_ms > 0);
    }
    const failedOnly = (await (
      await api.call('GET', `${run.links.cases}?status=failed,timeout`)
    ).json()) as typeof page1;
    assert.deepEqual(failedOnly.items, []);

    // Result events: one run_case.finished per case and one experiment_run.finished, valid, on a bound queue.
    const mine = (r: ReceivedResultEvent) => (r.body.run as { id?: string } | null)?.id === run.run_id;
    await eventually(
      async () => ((await collect()).filter(mine).length >= cases + 1 ? true : undefined),
      30_000,
      'result events',
    );
    const ofRun = received.filter(mine);
    const caseFinished = ofRun.filter((r) => r.routingKey === 'run_case.finished');
    assert.equal(caseFinished.length, cases);
    assert.deepEqual(
      caseFinished.map((r) => (r.body.run_case as { id: number }).id).sort(),
      [...caseIds].sort(),
    );
    const runFinished = ofRun.filter((r) => r.routingKey === 'experiment_run.finished');
    assert.equal(runFinished.length, 1);
    assert.equal((runFinished[0]?.body.run as { status: string }).status, 'done');
    for (const r of ofRun) {
      assertValidResultEvent(r.body);
      assert.equal(r.persistent, true);
    }
    assert.deepEqual(await managedContainers(stack.docker, [run.workflow_id]), []);
  });

  test('Idempotency-Key: the same POST twice is one run (also at once); the same key with another body is 409', async () => {
    const sample = JSON.parse(await readFile(SAMPLE, 'utf8')) as Record<string, unknown>;
    const body = { ...sample, name: `idempotent ${tag}` };
    const key = `key-${tag}`;
    const responses = await Promise.all(
      [1, 2, 3].map(() => api.call('POST', '/v1/runs', { body, headers: { 'idempotency-key': key } })),
    );
    const runs = await Promise.all(
      responses.map(async (r) => ({ status: r.status, body: (await r.json()) as RunBody })),
    );
    assert.deepEqual(
      runs.map((r) => r.status),
      [202, 202, 202],
    );
    const ids = new Set(runs.map((r) => r.body.run_id));
    assert.equal(ids.size, 1, 'one run');
    // Keys re-ordered in the body are the same body.
    const reordered = Object.fromEntries(Object.entries(body).reverse());
    const again = await api.call('POST', '/v1/runs', {
      body: reordered,
      headers: { 'idempotency-key': key },
    });
    assert.equal(again.status, 202);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.equal(((await again.json()) as RunBody).run_id, runs[0]?.body.run_id);

    const { rows } = await stack.db.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM experiments WHERE name = $1`,
      [body.name],
    );
    assert.equal(rows[0]?.n, 1, 'one set of platform rows');
    const { rows: requests } = await stack.db.pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM agentbench_run_requests WHERE experiment_id = $1',
      [runs[0]?.body.experiment_id],
    );
    assert.equal(requests[0]?.n, 1, 'one workflow');
    const other = await api.call('POST', '/v1/runs', {
      body: { ...body, name: 'another body' },
      headers: { 'idempotency-key': key },
    });
    assert.equal(other.status, 409);
    assert.equal(
      ((await other.json()) as { error: { code: string } }).error.code,
      'E_IDEMPOTENCY_KEY_REUSED',
    );
    // The same key from another token is another key.
    const otherToken = await startTestApi(stack, {
      API_TOKENS: `writer:${WRITE_TOKEN},second:second-token-0123456789`,
    });
    try {
      const second = await otherToken.call('POST', '/v1/runs', {
        body,
        token: 'second-token-0123456789',
        headers: { 'idempotency-key': key },
      });
      assert.equal(second.status, 202);
      const secondRun = (await second.json()) as RunBody;
      assert.notEqual(secondRun.run_id, runs[0]?.body.run_id);
      ids.add(secondRun.run_id);
    } finally {
      await otherToken.stop();
    }
    for (const id of ids) await stack.client.workflow.getHandle(id).result();
    assert.deepEqual(await managedContainers(stack.docker, [...ids]), []);
  });

  test('an existing experiment by id (the Run button), cancel, and retry-failed', async () => {
    const seeded = await seedExperiment(stack.db.pool, {
      cases: 2,
      queueStatus: 'idle',
      evaluators: 0,
      runtimeSpec: {
        agent_image: 'bench/busybox:latest',
        sandbox_start_command: 'sleep 3600',
        // Attempt 1 is the platform's earlier run, attempt 2 ours (fails), attempt 3 the retry.
        case_exec_command: `if [ {{run_case.attempt_no}} -lt 3 ]; then exit 9; fi; echo '{"output":"attempt {{run_case.attempt_no}}"}'`,
      },
    });
    // The seeded rows are the platform's previous run, ended: this run supersedes them.
    await stack.db.pool.query(`UPDATE run_cases SET status = 'canceled' WHERE experiment_id = $1`, [
      seeded.experimentId,
    ]);
    const started = await api.call('POST', '/v1/runs', { body: { experiment_id: seeded.experimentId } });
    assert.equal(started.status, 202, await started.text());
    const run = (await started.json()) as RunBody;
    assert.equal(run.experiment_id, seeded.experimentId);
    await stack.client.workflow.getHandle(run.workflow_id).result();
    const done = (await (await api.call('GET', run.links.self)).json()) as {
      status: string;
      cases: Record<string, number>;
    };
    assert.equal(done.status, 'failed', 'no case succeeded');
    assert.equal(done.cases.failed, 2);
    const { rows } = await stack.db.pool.query<{ attempt_no: number; is_latest: boolean }>(
      'SELECT attempt_no, is_latest FROM run_cases WHERE experiment_id = $1 ORDER BY id',
      [seeded.experimentId],
    );
    assert.deepEqual(
      rows.map((r) => [r.attempt_no, r.is_latest]),
      [
        [1, false],
        [1, false],
        [2, true],
        [2, true],
      ],
    );
    // Not from `failed`: the Run button works from idle or manual_terminated only.
    const refused = await api.call('POST', '/v1/runs', { body: { experiment_id: seeded.experimentId } });
    assert.equal(refused.status, 409);
    assert.equal(
      ((await refused.json()) as { error: { code: string } }).error.code,
      'E_EXPERIMENT_NOT_RUNNABLE',
    );

    const retry = await api.call('POST', `/v1/experiments/${seeded.experimentId}/retry-failed`);
    assert.equal(retry.status, 202, await retry.text());
    const retried = (await retry.json()) as RunBody & { retried_cases: number };
    assert.equal(retried.retried_cases, 2);
    await stack.client.workflow.getHandle(retried.workflow_id).result();
    const after = (await (await api.call('GET', `${retried.links.cases}`)).json()) as {
      items: Array<{ status: string; output: unknown }>;
    };
    assert.deepEqual(
      after.items.map((c) => [c.status, c.output]),
      [
        ['success', 'attempt 3'],
        ['success', 'attempt 3'],
      ],
    );
    const nothing = await api.call('POST', `/v1/experiments/${seeded.experimentId}/retry-failed`);
    assert.equal(nothing.status, 409);
    assert.equal(((await nothing.json()) as { error: { code: string } }).error.code, 'E_NO_FAILED_CASES');
    const missing = await api.call('POST', `/v1/experiments/999999999999/retry-failed`);
    assert.equal(missing.status, 404);

    // Cancel a long run: it ends canceled, its cases canceled, its containers gone.
    const slow = await seedExperiment(stack.db.pool, {
      cases: 2,
      queueStatus: 'idle',
      evaluators: 0,
      runtimeSpec: {
        agent_image: 'bench/busybox:latest',
        sandbox_start_command: 'sleep 3600',
        case_exec_command: 'sleep 60',
      },
    });
    await stack.db.pool.query(`DELETE FROM run_cases WHERE experiment_id = $1`, [slow.experimentId]);
    const slowRun = (await (
      await api.call('POST', '/v1/runs', { body: { experiment_id: slow.experimentId } })
    ).json()) as RunBody;
    await eventually(
      async () => {
        const r = (await (await api.call('GET', slowRun.links.self)).json()) as { status: string };
        return r.status === 'running' ? true : undefined;
      },
      60_000,
      'a running case',
    );
    const readOnly = await api.call('POST', slowRun.links.cancel, { token: READ_TOKEN });
    assert.equal(readOnly.status, 403);
    const cancel = await api.call('POST', slowRun.links.cancel);
    assert.equal(cancel.status, 202);
    assert.equal(((await cancel.json()) as { cancel: string }).cancel, 'requested');
    const end = await readEventStream(`${api.baseUrl}${slowRun.links.events}`, WRITE_TOKEN);
    assert.equal((end[end.length - 1]?.data as { status: string }).status, 'canceled');
    const list = (await (await api.call('GET', `/v1/runs?experiment_id=${slow.experimentId}`)).json()) as {
      items: Array<{ run_id: string; status: string; cases: Record<string, number> }>;
    };
    assert.deepEqual(
      list.items.map((r) => [r.run_id, r.status, r.cases.canceled]),
      [[slowRun.run_id, 'canceled', 2]],
    );
    const again = await api.call('POST', slowRun.links.cancel);
    assert.equal(((await again.json()) as { cancel: string }).cancel, 'not_running');
    assert.deepEqual(await managedContainers(stack.docker, [slowRun.workflow_id]), []);
  });
});
