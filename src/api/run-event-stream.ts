import type { ServerResponse } from 'node:http';
import type pg from 'pg';
import { errorCodeOf } from '../domain/run-status';
import { runCaseStates, type RunCaseState } from '../db/run-view-repository';
import type { RunSummary } from '../runs/run-summary';

/**
 * `GET /v1/runs/{id}/events` as Server-Sent Events. The stream opens with one `case` event per case
 * in its current status, then sends one `case` event per status change it sees, and ends with one
 * `run` event (the run's summary, as GET /v1/runs/{id} returns it) once the run's workflow has
 * closed; then the server closes the stream. Changes are read from Postgres every `pollMs`: a case
 * that moves twice within one interval is reported in its newer status only (terminal statuses are
 * final, so every case's end is always reported). A reconnecting client gets the current statuses
 * again (no Last-Event-ID replay is needed). Comment lines keep idle proxies from closing the stream.
 */

interface RunEventStreamDeps {
  pool: pg.Pool;
  /** The run's summary; `open` false once its workflow closed (or never existed and all cases ended). */
  summary: () => Promise<{ summary: RunSummary; open: boolean }>;
  /** JSON of a summary as the API serves it. */
  renderSummary: (summary: RunSummary) => object;
  pollMs?: number;
  keepAliveMs?: number;
}

const DEFAULT_POLL_MS = 500;
const DEFAULT_KEEP_ALIVE_MS = 15_000;
/** Rows written in one transaction carry its start time: read back this far to miss no late commit. */
const COMMIT_SKEW_MS = 5_000;

interface RunEventStreamResult {
  events: number;
  /** The client went away before the run ended. */
  clientClosed: boolean;
}

export async function streamRunEvents(
  res: ServerResponse,
  workflowId: string,
  deps: RunEventStreamDeps,
  signal: AbortSignal,
): Promise<RunEventStreamResult> {
  const pollMs = deps.pollMs ?? DEFAULT_POLL_MS;
  const keepAliveMs = deps.keepAliveMs ?? DEFAULT_KEEP_ALIVE_MS;
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    // nginx and similar would otherwise buffer the stream.
    'x-accel-buffering': 'no',
  });
  res.flushHeaders();
  let sequence = 0;
  const send = (event: string, data: object): void => {
    sequence += 1;
    res.write(`id: ${sequence}\nevent: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  };
  const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), keepAliveMs);
  const known = new Map<number, string>();
  let since: Date | undefined;

  const sendChanges = async (): Promise<void> => {
    const states = await runCaseStates(deps.pool, workflowId, since);
    for (const s of states) {
      const previous = known.get(s.runCaseId);
      if (previous === s.status) continue;
      known.set(s.runCaseId, s.status);
      send('case', caseEvent(workflowId, s, previous ?? null));
    }
    const newest = states.reduce<number>((max, s) => Math.max(max, s.updatedAt.getTime()), 0);
    if (newest > 0) {
      const candidate = new Date(newest - COMMIT_SKEW_MS);
      if (!since || candidate > since) since = candidate;
    }
  };

  try {
    while (!signal.aborted) {
      // The workflow's state first: when it is closed, every case write before it is committed.
      const { summary, open } = await deps.summary();
      await sendChanges();
      if (!open) {
        send('run', deps.renderSummary(summary));
        return { events: sequence, clientClosed: false };
      }
      await sleep(pollMs, signal);
    }
    return { events: sequence, clientClosed: true };
  } finally {
    clearInterval(keepAlive);
    res.end();
  }
}

function caseEvent(runId: string, s: RunCaseState, previous: string | null): object {
  return {
    run_id: runId,
    run_case_id: s.runCaseId,
    status: s.status,
    previous_status: previous,
    error_code: errorCodeOf(s.errorMessage),
    error_message: s.errorMessage,
    final_score: s.finalScore,
    at: s.updatedAt.toISOString(),
  };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done);
  });
}
