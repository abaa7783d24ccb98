import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { parseExperimentMessage } from '../../src/domain/message';
import { startExperimentRun } from '../../src/temporal/run-starter';
import { createLogger } from '../../src/logger';
import { seedExperiment } from '../support/database';
import { buildPlatformMessage } from '../support/platform';
import { managedContainers, startStack, type Stack } from '../support/stack';

const exec = promisify(execFile);

describe('benchctl rerun --failed', () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack();
  });
  after(async () => {
    await stack?.stop();
  });

  test('reruns only the failed case as a new attempt, with the platform attempt semantics', async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: 3 });
    const flaky = seeded.dataItemIds[1];
    const raw = buildPlatformMessage(seeded, {
      queue: 'direct',
      runtimeSpec: {
        agent_image: 'bench/busybox:latest',
        sandbox_start_command: 'sleep 3600',
        case_exec_command: `if [ {{run_case.attempt_no}} = 1 ] && [ {{run_case.data_item_id}} = ${flaky} ]; then exit 5; fi; echo '{"output":"attempt {{run_case.attempt_no}}"}'`,
      },
    });
    const parsed = parseExperimentMessage(JSON.stringify(raw));
    assert.ok(parsed.ok);
    // The agent row is what a rerun reads (the platform rebuilds the message from its tables).
    await stack.db.pool.query('UPDATE agents SET runtime_spec_json = $2 WHERE id = $1', [
      seeded.agentId,
      JSON.stringify(parsed.message.agent.runtime_spec_json),
    ]);
    const first = await startExperimentRun(
      {
        client: stack.client,
        pool: stack.db.pool,
        config: stack.config,
        log: createLogger({ level: 'silent' }),
      },
      parsed.message,
      parsed.message.message_id,
    );
    await stack.client.workflow.getHandle(first.workflowId).result();
    const before = await stack.db.pool.query<{ id: number; status: string; updated_at: Date }>(
      'SELECT id, status, updated_at FROM run_cases WHERE experiment_id = $1 ORDER BY id',
      [seeded.experimentId],
    );
    assert.deepEqual(before.rows.map((r) => r.status).sort(), ['failed', 'success', 'success']);

    const { stdout } = await exec(
      process.execPath,
      [
        '--import',
        'tsx',
        path.resolve(__dirname, '../../src/cli/benchctl.ts'),
        'rerun',
        String(seeded.experimentId),
        '--failed',
      ],
      {
        env: { ...process.env, ...stack.env },
      },
    );
    assert.match(stdout, /completed: 1 success, 0 failed/);

    const { rows } = await stack.db.pool.query<{
      id: number;
      data_item_id: number;
      attempt_no: number;
      is_latest: boolean;
      status: string;
      agent_output: unknown;
      updated_at: Date;
    }>(
      'SELECT id, data_item_id, attempt_no, is_latest, status, agent_output, updated_at FROM run_cases WHERE experiment_id = $1 ORDER BY id',
      [seeded.experimentId],
    );
    assert.equal(rows.length, 4);
    const forFlaky = rows.filter((r) => r.data_item_id === flaky);
    assert.deepEqual(
      forFlaky.map((r) => [r.attempt_no, r.is_latest, r.status]),
      [
        [1, false, 'failed'],
        [2, true, 'success'],
      ],
    );
    assert.equal(forFlaky[1]?.agent_output, 'attempt 2');
    // The successful cases were not touched by the rerun.
    for (const r of before.rows.filter((b) => b.status === 'success')) {
      const now = rows.find((x) => x.id === r.id);
      assert.equal(now?.updated_at.getTime(), r.updated_at.getTime());
      assert.equal(now?.is_latest, true);
    }
    const { rows: exp } = await stack.db.pool.query<{ queue_status: string }>(
      'SELECT queue_status FROM experiments WHERE id = $1',
      [seeded.experimentId],
    );
    assert.equal(exp[0]?.queue_status, 'done');
    assert.deepEqual(await managedContainers(stack.docker, [first.workflowId]), []);
  });
});
