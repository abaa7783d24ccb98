import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type pg from 'pg';
import type { Config } from '../config';
import { isOpenWorkflowState, runStatus, type RunStatus, type WorkflowState } from '../domain/run-status';
import {
  getRunRecord,
  runCaseCounts,
  runCaseCountsByRun,
  type RunCounts,
  type RunRecord,
} from '../db/run-view-repository';
import { temporalUiLink } from '../temporal/connection';
import { TemporalUnavailableError } from '../temporal/errors';

/**
 * One run as a reader sees it (the HTTP API, `benchctl status`): its status from its cases in
 * Postgres and its workflow's state in Temporal, never from a workflow query (which needs a worker
 * to answer). The run id is the workflow id.
 */
export interface RunSummary {
  runId: string;
  workflowId: string;
  experimentId: number;
  status: RunStatus;
  /** The workflow's execution status; null when Temporal does not know it or cannot be reached. */
  workflowStatus: WorkflowState | null;
  cases: RunCounts;
  /** When the run was submitted (its request stored). */
  createdAt: Date;
  /** When its first case started. */
  startedAt: string | null;
  /** When its workflow closed. */
  finishedAt: Date | null;
  temporalUiUrl: string;
}

interface RunReadDeps {
  client: Client;
  pool: pg.Pool;
  config: Config;
}

interface WorkflowView {
  status: WorkflowState | null;
  closeTime: Date | null;
}

const CLOSED_CACHE_SIZE = 1024;

/**
 * Temporal's view of runs. A closed workflow never changes again (short of a reset), so its view is
 * cached: polling a finished run costs Temporal nothing.
 */
export class WorkflowViews {
  private readonly closed = new Map<string, WorkflowView>();

  constructor(private readonly client: Client) {}

  async get(workflowId: string): Promise<WorkflowView> {
    const cached = this.closed.get(workflowId);
    if (cached) return cached;
    let view: WorkflowView;
    try {
      const d = await this.client.workflow.getHandle(workflowId).describe();
      view = { status: d.status.name as WorkflowState, closeTime: d.closeTime ?? null };
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return { status: null, closeTime: null };
      throw new TemporalUnavailableError(err);
    }
    if (!isOpenWorkflowState(view.status)) {
      this.closed.set(workflowId, view);
      if (this.closed.size > CLOSED_CACHE_SIZE) {
        const oldest = this.closed.keys().next().value;
        if (oldest !== undefined) this.closed.delete(oldest);
      }
    }
    return view;
  }
}

function summary(
  deps: RunReadDeps,
  record: RunRecord,
  counts: RunCounts,
  workflow: WorkflowView,
): RunSummary {
  return {
    runId: record.workflowId,
    workflowId: record.workflowId,
    experimentId: record.experimentId,
    status: runStatus(workflow.status, counts),
    workflowStatus: workflow.status,
    cases: counts,
    createdAt: record.createdAt,
    startedAt: counts.startedAt,
    finishedAt: workflow.closeTime,
    temporalUiUrl: temporalUiLink(deps.config, record.workflowId),
  };
}

/** The summary of one run; null when no run with that id was ever stored. */
export async function summarizeRun(
  deps: RunReadDeps,
  views: WorkflowViews,
  workflowId: string,
): Promise<RunSummary | null> {
  const [record, counts, workflow] = await Promise.all([
    getRunRecord(deps.pool, workflowId),
    runCaseCounts(deps.pool, workflowId),
    views.get(workflowId),
  ]);
  return record ? summary(deps, record, counts, workflow) : null;
}

/** Summaries of several stored runs (one counts query, Temporal described per run in parallel). */
export async function summarizeRuns(
  deps: RunReadDeps,
  views: WorkflowViews,
  records: RunRecord[],
): Promise<RunSummary[]> {
  const ids = records.map((r) => r.workflowId);
  const [counts, workflows] = await Promise.all([
    runCaseCountsByRun(deps.pool, ids),
    Promise.all(ids.map((id) => views.get(id))),
  ]);
  return records.map((record, i) =>
    summary(deps, record, counts.get(record.workflowId) as RunCounts, workflows[i] as WorkflowView),
  );
}
