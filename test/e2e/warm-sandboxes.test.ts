import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseExperimentMessage } from '../../src/domain/message';
import type { ExperimentRunResult } from '../../src/domain/experiment-run';
import { LABELS } from '../../src/docker/labels';
import { createLogger } from '../../src/logger';
import { warmPoolOwner } from '../../src/docker/warm-pool';
import { startExperimentRun } from '../../src/temporal/run-starter';
import { seedExperiment } from '../support/database';
import { buildPlatformMessage } from '../support/platform';
import { eventually, managedContainers, startStack, type Stack } from '../support/stack';

const POOL_SIZE = 2;
const log = createLogger({ level: 'silent' });

/**
 * Warm sandboxes through the real pipeline (SANDBOX_WARM_POOL_SIZE): sealed cases with a mock
 * gateway each, on warm containers that came with their sealed network — each answered by its own
 * gateway, with its own env and /benchmark/case.json; nothing of the pool left after the worker.
 */
describe('warm sandboxes end to end', () => {
  let stack: Stack;
  const workflowIds: string[] = [];

  before(async () => {
    stack = await startStack({ log, env: { SANDBOX_WARM_POOL_SIZE: String(POOL_SIZE) } });
  });

  after(async () => {
    assert.deepEqual(await managedContainers(stack.docker, workflowIds), [], 'no case container is left');
    await stack?.stop();
    const warm = await stack.docker.listContainers({
      all: true,
      filters: { label: [`${LABELS.pool}=${warmPoolOwner()}`] },
    });
    assert.deepEqual(
      warm.map((c) => c.Names[0]),
      [],
      "the worker's shutdown removed its warm containers",
    );
  });

  /** Runs `cases` sealed gateway cases; their rows and the container each ran in. */
  async function sealedRun(cases: number) {
    const seeded = await seedExperiment(stack.db.pool, { cases });
    const message = buildPlatformMessage(seeded, {
      queue: 'direct',
      runtimeSpec: {
        agent_image: 'bench/agent-base:bookworm',
        sandbox_start_command: 'sleep infinity',
        case_exec_command: `python3 -c "import json,os,urllib.request;print(json.dumps({'output':{'pong':json.load(urllib.request.urlopen('http://api.example.test/v1/ping'))['pong'],'env':os.environ['BENCHMARK_RUN_CASE_ID'],'file':json.load(open('/benchmark/case.json'))['run_case_id']}}))"`,
      },
      caseExtras: (i: number) => ({
        mock_config: {
          passthrough: false,
          rules: [
            {
              name: `ping-${i}`,
              match: { methods: ['GET'], path: '/v1/ping' },
              response: { type: 'json', json: { pong: i } },
            },
          ],
        },
      }),
    });
    const parsed = parseExperimentMessage(JSON.stringify(message));
    assert.ok(parsed.ok);
    const r = await startExperimentRun(
      { client: stack.client, pool: stack.db.pool, config: stack.config, log },
      parsed.message,
      parsed.message.message_id,
    );
    workflowIds.push(r.workflowId);
    const result = (await stack.client.workflow.getHandle(r.workflowId).result()) as ExperimentRunResult;
    assert.equal(result.outcome, 'completed');
    const { rows } = await stack.db.pool.query<{
      id: number;
      status: string;
      error_message: string | null;
      agent_output: { pong: number; env: string; file: number };
      container: string;
    }>(
      `SELECT rc.id, rc.status, rc.error_message, rc.agent_output, r.result->>'containerName' AS container
         FROM run_cases rc JOIN agentbench_case_results r ON r.run_case_id = rc.id
        WHERE rc.experiment_id = $1 ORDER BY rc.id`,
      [seeded.experimentId],
    );
    return rows;
  }

  test('sealed gateway cases run on warm containers that came with their sealed networks; each sees only its own case', async () => {
    // A pool fills once its template's cases come: the first one is cold.
    const [first] = await sealedRun(1);
    assert.equal(first?.status, 'success', first?.error_message ?? '');
    assert.doesNotMatch(first!.container, /^agentbench-warm-/);
    const pool = stack.worker!.warmPool!;
    await eventually(async () => (pool.idleCount >= POOL_SIZE ? true : undefined), 120_000, 'a full pool');

    const rows = await sealedRun(POOL_SIZE);
    assert.equal(rows.length, POOL_SIZE);
    rows.forEach((row, i) => {
      assert.equal(row.status, 'success', row.error_message ?? '');
      assert.match(row.container, /^agentbench-warm-/, 'it ran in a warm container');
      assert.deepEqual(row.agent_output, { pong: i, env: String(row.id), file: Number(row.id) });
    });
    assert.equal(new Set(rows.map((r) => r.container)).size, POOL_SIZE, 'one warm container per case');
  });
});
