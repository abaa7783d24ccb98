import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseExperimentMessage } from '../../src/domain/message';
import { queueRunCases } from '../../src/db/run-control-repository';
import { createLogger } from '../../src/logger';
import { RunReconciler } from '../../src/temporal/run-reconciler';
import { startExperimentRun } from '../../src/temporal/run-starter';
import { seedExperiment } from '../support/database';
import { buildPlatformMessage, seedStoredRun } from '../support/platform';
import { eventually, managedContainers, startStack, type Stack } from '../support/stack';

/**
 * Compensation (issue 13 item 6): a run closed from outside its workflow code leaves no row active
 * and no experiment `consuming` — the worker's run reconciler closes them.
 */
describe('run reconciler (real Temporal dev server, Docker, Postgres)', () => {
  let stack: Stack;
  const workflowIds: string[] = [];
  const log = createLogger({ level: 'silent' });

  before(async () => {
    stack = await startStack({
      env: {
        CONSUMER_CONCURRENT_CASES: '2',
        RUN_RECONCILER_INTERVAL_SECONDS: '1',
        RUN_RECONCILER_MIN_IDLE_SECONDS: '0',
      },
    });
  });
  after(async () => {
    if (!stack) return;
    await eventually(
      async () => ((await managedContainers(stack.docker, workflowIds)).length === 0 ? true : undefined),
      60_000,
      'no container of ours left',
    );
    await stack.stop();
  });

  test('`temporal workflow terminate` mid-run: running and queued rows end canceled with E_RUN_CLOSED_UNFINISHED, the experiment leaves consuming, the containers go', async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: 4 });
    const parsed = parseExperimentMessage(
      JSON.stringify(
        buildPlatformMessage(seeded, {
          queue: 'direct',
          runtimeSpec: {
            agent_image: 'bench/busybox:latest',
            sandbox_start_command: 'sleep 3600',
            case_exec_command: 'sleep 300',
          },
        }),
      ),
    );
    assert.ok(parsed.ok);
    await stack.db.pool.query('UPDATE experiments SET queue_message_id = $2 WHERE id = $1', [
      seeded.experimentId,
      parsed.message.message_id,
    ]);
    const r = await startExperimentRun(
      { client: stack.client, pool: stack.db.pool, config: stack.config, log },
      parsed.message,
      parsed.message.message_id,
    );
    workflowIds.push(r.workflowId);
    const handle = stack.client.workflow.getHandle(r.workflowId);
    const statuses = async () =>
      (
        await stack.db.pool.query<{ status: string; error_message: string | null }>(
          'SELECT status, error_message FROM run_cases WHERE experiment_id = $1 ORDER BY id',
          [seeded.experimentId],
        )
      ).rows;
    await eventually(
      async () => ((await statuses()).filter((s) => s.status === 'running').length === 2 ? true : undefined),
      120_000,
      'two cases running',
    );

    await handle.terminate('operator terminated the run');

    const final = await eventually(
      async () => {
        const rows = await statuses();
        return rows.every((s) => s.status === 'canceled') ? rows : undefined;
      },
      60_000,
      'every row canceled',
    );
    for (const row of final)
      assert.match(row.error_message ?? '', /^E_RUN_CLOSED_UNFINISHED: workflow .* is terminated/);
    const { rows } = await stack.db.pool.query<{ queue_status: string }>(
      'SELECT queue_status FROM experiments WHERE id = $1',
      [seeded.experimentId],
    );
    assert.notEqual(rows[0]?.queue_status, 'consuming');
    await eventually(
      async () => ((await managedContainers(stack.docker, [r.workflowId])).length === 0 ? true : undefined),
      60_000,
      "the terminated run's containers removed",
    );
  });

  test('fails closed: rows of a run Temporal does not know stay as they are', async () => {
    const { seeded, workflowId } = await seedStoredRun(stack.db.pool, 2);
    await queueRunCases(stack.db.pool, { workflowId, experimentId: seeded.experimentId });
    const reconciler = new RunReconciler({
      pool: stack.db.pool,
      client: stack.client,
      log,
      minIdleSeconds: 0,
    });

    await reconciler.sweep();

    const { rows } = await stack.db.pool.query<{ status: string }>(
      'SELECT status FROM run_cases WHERE experiment_id = $1',
      [seeded.experimentId],
    );
    assert.deepEqual(
      rows.map((x) => x.status),
      ['queued', 'queued'],
    );
  });
});
