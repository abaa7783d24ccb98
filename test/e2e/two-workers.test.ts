import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { parseExperimentMessage } from '../../src/domain/message';
import { createLogger } from '../../src/logger';
import { queuePollers } from '../../src/cli/queue-pollers';
import { startExperimentRun } from '../../src/temporal/run-starter';
import type { ExperimentRunResult } from '../../src/domain/experiment-run';
import { seedExperiment } from '../support/database';
import { buildPlatformMessage } from '../support/platform';
import { eventually, managedContainers, spawnWorker, startStack, type Stack } from '../support/stack';

const CASES = 40;

/**
 * Two `benchctl worker` processes on one task queue serve one run between them. Each has its own
 * collector (OTEL_COLLECTOR_PORT=0 in the stack's env) and its own mock gateways.
 */
describe('two worker processes on one task queue', () => {
  let stack: Stack;
  let workers: Array<ReturnType<typeof spawnWorker>>;

  before(async () => {
    stack = await startStack({ worker: false });
    // Few activity slots each: eager dispatch to the worker that runs the workflow task is bounded
    // by its free slots, so the other worker gets the rest through matching.
    const env = { ...stack.env, WORKER_MAX_CONCURRENT_ACTIVITIES: '3' };
    workers = [spawnWorker(env), spawnWorker(env)];
    await eventually(
      async () => ((await queuePollers(stack.client, stack.config)).length >= 2 ? true : undefined),
      120_000,
      'both workers polling',
    );
  });
  after(async () => {
    for (const w of workers ?? []) w.child.kill('SIGTERM');
    await Promise.all((workers ?? []).map((w) => w.exited));
    await stack?.stop();
  });

  test(`one ${CASES}-case run: every case succeeds and both workers executed cases`, async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: CASES });
    const raw = buildPlatformMessage(seeded, {
      queue: 'direct',
      runtimeSpec: {
        agent_image: 'bench/busybox:latest',
        sandbox_start_command: 'sleep 3600',
        case_exec_command: `sleep 1; echo '{"output":"case {{run_case.data_item_id}}"}'`,
      },
    });
    const parsed = parseExperimentMessage(JSON.stringify(raw));
    assert.ok(parsed.ok);
    const { workflowId } = await startExperimentRun(
      {
        client: stack.client,
        pool: stack.db.pool,
        config: stack.config,
        log: createLogger({ level: 'silent' }),
      },
      parsed.message,
      parsed.message.message_id,
      { concurrentCases: 8 },
    );
    const handle = stack.client.workflow.getHandle(workflowId);
    const result = (await handle.result()) as ExperimentRunResult;
    assert.equal(result.outcome, 'completed');
    assert.equal(result.progress.success, CASES, workers.map((w) => w.output()).join('\n'));

    // Who ran what: every started activity names the worker that polled it.
    const history = await handle.fetchHistory();
    const ranBy = new Set(
      (history.events ?? []).flatMap((e) => {
        const identity = e.activityTaskStartedEventAttributes?.identity;
        return identity ? [identity] : [];
      }),
    );
    for (const w of workers)
      assert.ok(
        ranBy.has(`${w.child.pid}@${hostname()}`),
        `worker ${w.child.pid} ran no case: ${[...ranBy].join(', ')}`,
      );

    const { rows } = await stack.db.pool.query<{ status: string; n: string }>(
      'SELECT status, count(*) AS n FROM run_cases WHERE experiment_id = $1 GROUP BY status',
      [seeded.experimentId],
    );
    assert.deepEqual(
      rows.map((r) => [r.status, Number(r.n)]),
      [['success', CASES]],
    );
    assert.deepEqual(await managedContainers(stack.docker, [workflowId]), []);
  });
});
