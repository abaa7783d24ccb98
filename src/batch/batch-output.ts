import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { batchTaskSchema } from '../domain/batch-task';
import { buildBatchSummary, buildTrajectoryFile, type BatchSummary } from './trajectory-file';

/**
 * `<out>/trajectories/<task_id>.json` for every latest case of a batch experiment and
 * `<out>/summary.json`, each written to a temporary name first so a reader never sees half a file.
 */
export async function writeBatchOutput(
  pool: pg.Pool,
  p: {
    experimentId: number;
    workflowId: string;
    tasksFile: string;
    outDir: string;
    startedAt: Date;
    finishedAt: Date;
    invalidLines: number;
  },
): Promise<{ summary: BatchSummary; summaryFile: string }> {
  const { rows } = await pool.query<{
    run_case_id: number;
    status: string;
    agent_output: unknown;
    agent_trajectory: unknown;
    error_message: string | null;
    latency_ms: number | null;
    input_tokens: number | null;
    output_tokens: number | null;
    finished_at: Date | null;
    cached: boolean | null;
    task: unknown;
  }>(
    `SELECT rc.id AS run_case_id, rc.status, rc.agent_output, rc.agent_trajectory, rc.error_message, rc.latency_ms,
            rc.input_tokens, rc.output_tokens, rc.finished_at, (rc.artifacts_json->>'cached')::boolean AS cached, bt.task
       FROM run_cases rc JOIN agentbench_batch_tasks bt ON bt.data_item_id = rc.data_item_id
      WHERE rc.experiment_id = $1 AND rc.is_latest ORDER BY rc.data_item_id`,
    [p.experimentId],
  );
  const dir = path.join(p.outDir, 'trajectories');
  await mkdir(dir, { recursive: true });
  const now = new Date();
  const files = [];
  for (const row of rows) {
    const task = batchTaskSchema.parse(row.task);
    const trajectory = buildTrajectoryFile(
      task,
      {
        experimentId: p.experimentId,
        runCaseId: Number(row.run_case_id),
        status: row.status,
        agentOutput: row.agent_output,
        agentTrajectory: row.agent_trajectory,
        errorMessage: row.error_message,
        latencyMs: row.latency_ms === null ? null : Number(row.latency_ms),
        inputTokens: row.input_tokens === null ? null : Number(row.input_tokens),
        outputTokens: row.output_tokens === null ? null : Number(row.output_tokens),
        finishedAt: row.finished_at,
        cached: row.cached === true,
      },
      now,
    );
    const file = path.join('trajectories', `${task.task_id}.json`);
    await writeJson(path.join(p.outDir, file), trajectory);
    files.push({ file, trajectory, taskType: task.task_type });
  }
  const summary = buildBatchSummary({ ...p, files });
  const summaryFile = path.join(p.outDir, 'summary.json');
  await writeJson(summaryFile, summary);
  return { summary, summaryFile };
}

async function writeJson(file: string, value: unknown): Promise<void> {
  const partial = `${file}.partial`;
  await writeFile(partial, `${JSON.stringify(value, null, 2)}\n`);
  await rename(partial, file);
}
