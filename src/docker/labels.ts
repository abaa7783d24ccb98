import { createHash } from 'node:crypto';

/** Docker labels we put on every case container; the reaper and cleanup find containers by them. */
export const LABELS = {
  managed: 'io.agentbench.managed',
  /** Config.deploymentId of the worker that created the container. */
  deployment: 'io.agentbench.deployment',
  experimentId: 'io.agentbench.experiment-id',
  runCaseId: 'io.agentbench.run-case-id',
  workflowId: 'io.agentbench.workflow-id',
  attempt: 'io.agentbench.activity-attempt',
  createdAt: 'io.agentbench.created-at',
  /**
   * On a warm container and its network (warm-pool.ts): the worker process whose pool made it
   * (`host:pid:start time`), by which the reaper tells whether that pool still exists. Such a
   * container carries no case labels, before its case or after.
   */
  pool: 'io.agentbench.pool',
} as const;

/**
 * `agentbench-case-<runCaseId>-<hash>-a<attempt>`: readable in `docker ps`, unique per workflow run
 * (the same run_case_id can be in flight in two workflows) and per activity attempt (a retry never
 * collides with a previous attempt's container that is still being removed).
 */
export function caseContainerName(workflowId: string, runCaseId: number | string, attempt: number): string {
  const hash = createHash('sha256').update(workflowId).digest('hex').slice(0, 10);
  // Docker names allow [a-zA-Z0-9][a-zA-Z0-9_.-]*; ids arrive as JSON strings, so sanitize.
  const caseId =
    String(runCaseId)
      .replace(/[^A-Za-z0-9_.-]/g, '_')
      .slice(0, 40) || 'unknown';
  return `agentbench-case-${caseId}-${hash}-a${attempt}`;
}
