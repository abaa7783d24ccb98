/**
 * Records representative workflow histories into test/histories/, replayed by
 * test/integration/workflow-replay.test.ts so a change that would break running workflows fails CI.
 * Re-record (and review the diff) only when a change is meant to be incompatible and uses patched():
 *   node --import tsx test/support/record-histories.ts
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { historyToJSON } from '@temporalio/common/lib/proto-utils';
import type { WorkflowHandle } from '@temporalio/client';
import { parseExperimentMessage } from '../../src/domain/message';
import type { RunSettings } from '../../src/domain/experiment-run';
import { createLogger } from '../../src/logger';
import { startExperimentRun } from '../../src/temporal/run-starter';
import { fetchWorkflowHistories } from '../../src/temporal/history-replay';
import { seedExperiment, type SeededExperiment } from './database';
import { openAiReply, startLlmJudgeServer } from './llm-judge-server';
import { buildPlatformMessage } from './platform';
import { eventually, startStack, type Stack } from './stack';

const OUT = path.resolve(__dirname, '../histories');

async function main(): Promise<void> {
  const stack = await startStack({ env: { CONSUMER_CONCURRENT_CASES: '2' } });
  const log = createLogger({ level: 'silent' });
  try {
    await mkdir(OUT, { recursive: true });
    const start = async (
      cases: number,
      spec: Record<string, unknown>,
      overrides: Partial<RunSettings> = {},
      setQueueMessage = true,
      scorers: (s: SeededExperiment) => unknown[] = () => [],
    ) => {
      const seeded = await seedExperiment(stack.db.pool, { cases });
      const parsed = parseExperimentMessage(
        JSON.stringify(
          buildPlatformMessage(seeded, { queue: 'record', runtimeSpec: spec, scorers: scorers(seeded) }),
        ),
      );
      if (!parsed.ok) throw new Error(parsed.error);
      if (setQueueMessage) {
        await stack.db.pool.query('UPDATE experiments SET queue_message_id = $2 WHERE id = $1', [
          seeded.experimentId,
          parsed.message.message_id,
        ]);
      }
      const r = await startExperimentRun(
        { client: stack.client, pool: stack.db.pool, config: stack.config, log },
        parsed.message,
        parsed.message.message_id,
        overrides,
      );
      return { seeded, handle: stack.client.workflow.getHandle(r.workflowId) };
    };
    const busybox = (cmd: string) => ({
      agent_image: 'bench/busybox:latest',
      sandbox_start_command: 'sleep 3600',
      case_exec_command: cmd,
    });

    // Three consecutive ids: at least one is even and fails, the others succeed.
    const mixed = await start(
      3,
      busybox(`if [ $(( {{run_case.run_case_id}} % 2 )) = 0 ]; then exit 4; fi; echo '{"output":"ok"}'`),
    );
    await mixed.handle.result();
    await save(stack, 'mixed-success-and-failure', mixed.handle);

    // Many cases finishing together with a judge to call: concurrent local-activity results
    // followed by score activities — the shape most sensitive to replay ordering.
    const judge = await startLlmJudgeServer();
    try {
      const baseUrl = `${judge.origin}/v1/chat/completions`;
      for (let i = 0; i < 8; i++)
        judge.script('/v1/chat/completions', { json: openAiReply('{"score":1,"reason":"ok"}') });
      const scored = await start(
        8,
        busybox(`echo '{"output":"ok"}'`),
        { concurrentCases: 4, scorerConcurrentCases: 2 },
        true,
        (seeded) => [
          {
            id: String(seeded.evaluatorIds[0]),
            scorer_key: 'judge',
            name: 'judge',
            scorer_config: {
              prompt_template: 'Output: {{run.output}}',
              base_url: baseUrl,
              model_name: 'm',
              api_style: 'openai',
              api_key: 'sk-record',
            },
          },
        ],
      );
      await stack.db.pool.query(`UPDATE evaluators SET api_key = 'sk-record' WHERE id = $1`, [
        scored.seeded.evaluatorIds[0],
      ]);
      await scored.handle.result();
      await save(stack, 'scored-concurrent', scored.handle);
    } finally {
      await judge.close();
    }

    const chained = await start(6, busybox(`echo '{"output":"ok"}'`), { maxHistoryEvents: 40 });
    await chained.handle.result();
    await save(stack, 'continued-as-new', chained.handle);

    const badSpec = await start(2, { case_exec_command: 'true' });
    await badSpec.handle.result();
    await save(stack, 'failed-before-start', badSpec.handle);

    const stale = await start(1, busybox('true'), {}, false);
    await stack.db.pool.query(`UPDATE experiments SET queue_message_id = 'another-message' WHERE id = $1`, [
      stale.seeded.experimentId,
    ]);
    await stale.handle.result();
    await save(stack, 'skipped-stale', stale.handle);

    const canceled = await start(3, busybox('sleep 300'));
    await eventually(async () => {
      const { rows } = await stack.db.pool.query(
        `SELECT 1 FROM run_cases WHERE experiment_id = $1 AND status = 'running'`,
        [canceled.seeded.experimentId],
      );
      return rows.length >= 2 ? true : undefined;
    });
    await canceled.handle.cancel();
    await canceled.handle.result().catch(() => undefined);
    await save(stack, 'canceled-mid-run', canceled.handle);

    const terminated = await start(3, busybox('sleep 300'));
    await eventually(async () => {
      const { rows } = await stack.db.pool.query(
        `SELECT 1 FROM run_cases WHERE experiment_id = $1 AND status = 'running'`,
        [terminated.seeded.experimentId],
      );
      return rows.length >= 1 ? true : undefined;
    });
    await stack.db.pool.query(
      `UPDATE experiments SET queue_status = 'manual_terminated', queue_message_id = NULL WHERE id = $1`,
      [terminated.seeded.experimentId],
    );
    await terminated.handle.result();
    await save(stack, 'platform-terminated', terminated.handle);
  } finally {
    await stack.stop();
  }
}

async function save(stack: Stack, name: string, handle: WorkflowHandle): Promise<void> {
  const runs = await fetchWorkflowHistories(stack.client, handle.workflowId);
  for (const [i, run] of runs.entries()) {
    const file = path.join(OUT, runs.length > 1 ? `${name}.run${i + 1}.json` : `${name}.json`);
    await writeFile(file, historyToJSON(run.history as Parameters<typeof historyToJSON>[0]));
    process.stdout.write(`recorded ${path.relative(process.cwd(), file)}\n`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${String(err)}\n`);
  process.exit(1);
});
