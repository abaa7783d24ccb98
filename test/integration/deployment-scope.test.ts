import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import type { Client } from '@temporalio/client';
import { loadConfig, type Config } from '../../src/config';
import { createLogger } from '../../src/logger';
import { parseExperimentMessage } from '../../src/domain/message';
import { SA } from '../../src/domain/search-attributes';
import { cancelExperimentRuns } from '../../src/runs/run-control';
import { connectTemporalClient } from '../../src/temporal/connection';
import { experimentRunsQuery, findExperimentRuns } from '../../src/temporal/run-lookup';
import { startExperimentRun } from '../../src/temporal/run-starter';
import { createTestDatabase, seedExperiment, type TestDatabase } from '../support/database';
import { buildPlatformMessage } from '../support/platform';
import { eventually, localTestEnv } from '../support/stack';

/**
 * Two platform databases sharing one namespace both have an experiment with the same id. Workflows
 * here run on a task queue nobody polls: only their start and their search attributes matter.
 */
describe('runs of one deployment only', () => {
  const taskQueue = `agentbench-test-scope-${randomBytes(4).toString('hex')}`;
  let db: TestDatabase;
  let config: Config;
  let client: Client;
  const started: string[] = [];

  before(async () => {
    db = await createTestDatabase();
    config = loadConfig(
      localTestEnv({
        DATABASE_URL: db.url,
        TEMPORAL_TASK_QUEUE: taskQueue,
        AGENTBENCH_DEPLOYMENT_ID: 'ours',
      }),
    );
    client = await connectTemporalClient(config);
  });
  after(async () => {
    for (const id of started)
      await client.workflow
        .getHandle(id)
        .terminate('test cleanup')
        .catch(() => undefined);
    await client?.connection.close();
    await db?.drop();
  });

  async function startRaw(workflowId: string, experimentId: number, deployment: string | null) {
    await client.workflow.start('experimentRunWorkflow', {
      workflowId,
      taskQueue,
      args: [],
      typedSearchAttributes: [
        { key: SA.experimentId, value: String(experimentId) },
        ...(deployment === null ? [] : [{ key: SA.deploymentId, value: deployment }]),
      ],
    });
    started.push(workflowId);
  }

  test('the run starter sets the deployment attribute', async () => {
    const seeded = await seedExperiment(db.pool, { cases: 1 });
    const raw = buildPlatformMessage(seeded, {
      queue: 'direct',
      runtimeSpec: {
        agent_image: 'bench/busybox:latest',
        sandbox_start_command: 'sleep 3600',
        case_exec_command: 'true',
      },
    });
    const parsed = parseExperimentMessage(JSON.stringify(raw));
    assert.ok(parsed.ok);
    const { workflowId } = await startExperimentRun(
      { client, pool: db.pool, config, log: createLogger({ level: 'silent' }) },
      parsed.message,
      parsed.message.message_id,
    );
    started.push(workflowId);
    const d = await client.workflow.getHandle(workflowId).describe();
    assert.equal(d.typedSearchAttributes.get(SA.deploymentId), 'ours');
    assert.equal(d.typedSearchAttributes.get(SA.experimentId), String(seeded.experimentId));
  });

  test('cancel sees our runs and our runs from before the attribute, never another deployment’s', async () => {
    const experimentId = randomInt(1e9, 2e9);
    const tag = randomBytes(4).toString('hex');
    const ours = `experiment-${experimentId}-ours-${tag}`;
    const theirs = `experiment-${experimentId}-theirs-${tag}`;
    const legacyOurs = `experiment-${experimentId}-legacy-ours-${tag}`;
    const legacyTheirs = `experiment-${experimentId}-legacy-theirs-${tag}`;
    await startRaw(ours, experimentId, 'ours');
    await startRaw(theirs, experimentId, 'theirs');
    await startRaw(legacyOurs, experimentId, null);
    await startRaw(legacyTheirs, experimentId, null);
    // A legacy run is ours when our database stored its request.
    await db.pool.query(
      `INSERT INTO agentbench_run_requests (workflow_id, experiment_id, message_id, request) VALUES ($1, $2, 'm', '{}')`,
      [legacyOurs, experimentId],
    );
    // Visibility is eventually consistent: wait until the filter sees all three candidates.
    await eventually(
      async () => {
        let n = 0;
        for await (const _ of client.workflow.list({ query: experimentRunsQuery('ours', experimentId) }))
          n += 1;
        return n === 3 ? n : undefined;
      },
      60_000,
      'the runs in visibility',
    );
    const isOwnRun = async (id: string) =>
      ((await db.pool.query('SELECT 1 FROM agentbench_run_requests WHERE workflow_id = $1', [id])).rowCount ??
        0) > 0;
    const found = await findExperimentRuns(client, { deploymentId: 'ours', isOwnRun }, experimentId);
    assert.deepEqual(found.map((r) => r.workflowId).sort(), [legacyOurs, ours].sort());

    const canceled = await cancelExperimentRuns(
      { client, pool: db.pool, deploymentId: 'ours' },
      experimentId,
    );
    assert.deepEqual(canceled.sort(), [legacyOurs, ours].sort());
    const theirsNow = await client.workflow.getHandle(theirs).describe();
    assert.equal(theirsNow.status.name, 'RUNNING');
    // Nobody polls the queue, so the cancel is recorded but not yet acted on: look at the history.
    const history = await client.workflow.getHandle(theirs).fetchHistory();
    assert.ok(!history.events?.some((e) => e.workflowExecutionCancelRequestedEventAttributes));
  });
});
