import { createHash } from 'node:crypto';
import type pg from 'pg';
import type { BatchTask } from '../domain/batch-task';
import type { ExperimentRunRequested } from '../domain/message';
import { pythonCanonicalJson } from '../domain/runtime-snapshot';
import { batchRuntimeSpec } from '../domain/task-runtime';
import { insertBatchTasks } from '../db/batch-task-repository';
import { dispatchExperimentFile } from './platform-dispatch';

const BATCH_AGENT_KEY = 'agentbench-tasks';

/**
 * A batch of tasks as the platform's rows, the way an experiment file is: one dataset item per task
 * (its description as user_input, its `constraints.mock_config` as the item's mock config), the
 * built-in runtimes' agent, one experiment and its pending run cases; our agentbench_batch_tasks
 * holds the rest of each task, in the same transaction. So status, cancel, rerun, report and the
 * API see an ordinary experiment.
 */
export async function dispatchTaskBatch(
  pool: pg.Pool,
  p: { name: string; tasks: BatchTask[]; cache: boolean; triggeredBy?: string },
): Promise<ExperimentRunRequested> {
  const spec = batchRuntimeSpec({
    maxTaskTimeoutSeconds: Math.max(...p.tasks.map((t) => t.timeout)),
    cache: p.cache,
  });
  // One agent version per spec, so a batch never changes the spec another batch's rerun reads.
  const version = `v1-${createHash('sha256').update(pythonCanonicalJson(spec)).digest('hex').slice(0, 12)}`;
  return dispatchExperimentFile(
    pool,
    {
      name: p.name,
      triggered_by: p.triggeredBy ?? 'benchctl',
      dataset: {
        name: p.name,
        items: p.tasks.map((t) => ({
          user_input: t.description,
          session_jsonl: '[]',
          reference_output: {},
          mock_config: isRecord(t.constraints.mock_config) ? t.constraints.mock_config : null,
        })),
      },
      agent: { name: 'built-in task runtimes', agent_key: BATCH_AGENT_KEY, version, runtime_spec_json: spec },
      evaluators: [],
    },
    (client, itemIds) =>
      insertBatchTasks(
        client,
        itemIds.map((dataItemId, i) => ({ dataItemId, task: p.tasks[i] as BatchTask })),
      ),
  );
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
