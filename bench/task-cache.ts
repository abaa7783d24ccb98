/**
 * The result cache's payoff: the same batch of built-in-runtime tasks run twice through the whole
 * pipeline (dispatch → workflow → worker → trajectory files); the second run reuses every result.
 * Prints both wall times and the second as a fraction of the first (measured in this one run).
 *
 *   node --import tsx bench/task-cache.ts [tasks per type, default 3]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { writeBatchOutput } from '../src/batch/batch-output';
import { batchTaskSchema, type BatchTask } from '../src/domain/batch-task';
import { workflowIdForRun } from '../src/domain/experiment-run';
import { createLogger } from '../src/logger';
import { dispatchTaskBatch } from '../src/local-run/batch-dispatch';
import { startExperimentRun } from '../src/temporal/run-starter';
import { startStack } from '../test/support/stack';
import { startLocalSite, startStubLlm } from '../test/support/task-batch-fixtures';

async function main(): Promise<void> {
  const perType = Number(process.argv[2] ?? 3);
  const site = await startLocalSite();
  const llm = await startStubLlm(site.url);
  const stack = await startStack({
    env: { LLM_BASE_URL: `${llm.url}/v1`, LLM_MODEL: 'stub-model', CONSUMER_CONCURRENT_CASES: '4' },
  });
  const out = await mkdtemp(path.join(tmpdir(), 'agentbench-bench-'));
  const tasks: BatchTask[] = [];
  for (let n = 1; n <= perType; n++) {
    tasks.push(
      batchTaskSchema.parse({
        task_id: `code-${n}`,
        task_type: 'code',
        description: `square ${n}`,
        constraints: { code: `print(${n} ** 2)` },
      }),
    );
    tasks.push(
      batchTaskSchema.parse({
        task_id: `web-${n}`,
        task_type: 'web',
        description: `read page ${n}`,
        constraints: { url: `${site.url}/page/${n}` },
      }),
    );
    tasks.push(
      batchTaskSchema.parse({
        task_id: `reason-${n}`,
        task_type: 'reasoning',
        description: `look up page ${n}`,
        max_steps: 6,
      }),
    );
  }
  const log = createLogger({ level: 'silent' });
  const runOnce = async (label: string) => {
    const startedAt = new Date();
    const message = await dispatchTaskBatch(stack.db.pool, { name: `bench ${label}`, tasks, cache: true });
    const { workflowId } = await startExperimentRun(
      { client: stack.client, pool: stack.db.pool, config: stack.config, log },
      message,
      message.message_id,
    );
    await stack.client.workflow.getHandle(workflowId).result();
    const { summary } = await writeBatchOutput(stack.db.pool, {
      experimentId: message.experiment.id,
      workflowId: workflowIdForRun(message.experiment.id, message.message_id),
      tasksFile: 'bench',
      outDir: path.join(out, label),
      startedAt,
      finishedAt: new Date(),
      invalidLines: 0,
    });
    return { seconds: (Date.now() - startedAt.getTime()) / 1000, summary };
  };
  try {
    // The same worker serves both runs: its start-up (workflow bundle) is paid before either.
    const first = await runOnce('first');
    const second = await runOnce('second');
    const line = (label: string, r: typeof first) =>
      `${label}: ${r.seconds.toFixed(2)} s, ${r.summary.counts.succeeded}/${r.summary.counts.total} succeeded, cache hits ${r.summary.cache.hits}`;
    process.stdout.write(
      `${tasks.length} tasks (${perType} per runtime)\n${line('first run ', first)}\n${line('second run', second)}\n`,
    );
    process.stdout.write(`second / first = ${(second.seconds / first.seconds).toFixed(3)}\n`);
  } finally {
    await stack.stop();
    await site.close();
    await llm.close();
    await rm(out, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
