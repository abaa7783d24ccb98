import type { Client } from '@temporalio/client';
import type { Config } from '../config';
import { errorText } from '../domain/errors';
import { CliError } from './process-context';

// temporal.api.enums.v1.TaskQueueType / TaskQueueKind (@temporalio/proto is not a direct dependency).
const TASK_QUEUE_TYPE_WORKFLOW = 1;
const TASK_QUEUE_KIND_NORMAL = 1;
const DESCRIBE_TIMEOUT_MS = 5_000;
/**
 * Temporal lists a poller for minutes after its last poll, so a worker that died a minute ago still
 * appears. A live one polls again at least once per long-poll (about a minute, 70 s at most).
 */
const LIVE_POLLER_SECONDS = 75;

/** Identities of the workers that polled the task queue for workflow tasks lately (Temporal's view). */
export async function queuePollers(client: Client, config: Config, now = Date.now()): Promise<string[]> {
  const { pollers } = await client.connection.withDeadline(Date.now() + DESCRIBE_TIMEOUT_MS, () =>
    client.workflowService.describeTaskQueue({
      namespace: config.temporal.namespace,
      taskQueue: { name: config.temporal.taskQueue, kind: TASK_QUEUE_KIND_NORMAL },
      taskQueueType: TASK_QUEUE_TYPE_WORKFLOW,
    }),
  );
  return (pollers ?? [])
    .filter((p) => {
      const seconds = Number(p.lastAccessTime?.seconds ?? 0);
      return now / 1000 - seconds <= LIVE_POLLER_SECONDS;
    })
    .map((p) => p.identity ?? '?');
}

/**
 * `--no-worker` hands the run to a `benchctl worker` elsewhere: without one polling the queue the
 * run would sit RUNNING with nobody serving it, so say so before anything is started.
 */
export async function requireQueuePoller(client: Client, config: Config): Promise<void> {
  let pollers: string[];
  try {
    pollers = await queuePollers(client, config);
  } catch (err) {
    throw new CliError(
      `cannot ask Temporal who polls task queue ${config.temporal.taskQueue}: ${errorText(err)}`,
    );
  }
  if (pollers.length === 0) {
    throw new CliError(
      `no worker polls task queue ${config.temporal.taskQueue} in namespace ${config.temporal.namespace}: ` +
        'start `benchctl worker` (same TEMPORAL_TASK_QUEUE) or drop --no-worker. Nothing was started',
    );
  }
}
