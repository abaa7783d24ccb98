import type {
  FastifyInstance,
  FastifyBaseLogger,
  RawServerDefault,
  RawReplyDefaultExpression,
  RawRequestDefaultExpression,
} from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { CASE_STATUSES, type CaseStatus } from '../domain/case-status';
import { errorCodeOf, isOpenWorkflowState } from '../domain/run-status';
import {
  DispatchRefusedError,
  dispatchExistingExperiment,
  dispatchExperimentFile,
  dispatchRetryFailed,
} from '../local-run/platform-dispatch';
import { getRunRecord, listRunCases, listRunRecords, type RunListCursor } from '../db/run-view-repository';
import { requestRunCancel } from '../runs/run-control';
import { summarizeRun, summarizeRuns, type RunSummary, type WorkflowViews } from '../runs/run-summary';
import { temporalUiLink } from '../temporal/connection';
import type { ApiServerDeps } from './api-server';
import { ApiError } from './api-errors';
import {
  cancelAccepted,
  caseList,
  caseListQuery,
  experimentIdParams,
  idempotencyHeaders,
  retryAccepted,
  runAccepted,
  runIdParams,
  runList,
  runListQuery,
  runRequestBody,
  runSchema,
} from './api-schemas';
import { streamRunEvents } from './run-event-stream';
import { submitRun, type Submitted } from './run-submission';

const acceptanceHeaders = (submitted: Submitted) => ({
  location: `/v1/runs/${encodeURIComponent(submitted.workflowId)}`,
  'idempotent-replayed': String(submitted.replayed),
});

type ZodApp = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  ZodTypeProvider
>;

interface RunRouteDeps extends ApiServerDeps {
  views: WorkflowViews;
  /** Open event streams, aborted when the server closes. */
  streams: Set<AbortController>;
  errorBody: z.ZodType;
}

const errors = (errorBody: z.ZodType, ...codes: number[]) =>
  Object.fromEntries(codes.map((c) => [c, errorBody]));

function links(config: ApiServerDeps['config'], runId: string) {
  const self = `/v1/runs/${encodeURIComponent(runId)}`;
  return {
    self,
    cases: `${self}/cases`,
    events: `${self}/events`,
    cancel: `${self}/cancel`,
    temporal_ui: temporalUiLink(config, runId),
  };
}

function renderRun(config: ApiServerDeps['config'], s: RunSummary): z.input<typeof runSchema> {
  const { startedAt: _startedAt, ...cases } = s.cases;
  return {
    run_id: s.runId,
    workflow_id: s.workflowId,
    experiment_id: s.experimentId,
    status: s.status,
    workflow_status: s.workflowStatus,
    cases,
    created_at: s.createdAt.toISOString(),
    started_at: s.startedAt,
    finished_at: s.finishedAt ? s.finishedAt.toISOString() : null,
    links: links(config, s.runId),
  };
}

const REFUSALS: Record<DispatchRefusedError['code'], number> = {
  E_EXPERIMENT_NOT_FOUND: 404,
  E_EXPERIMENT_NOT_RUNNABLE: 409,
  E_EXPERIMENT_BUSY: 409,
  E_NO_FAILED_CASES: 409,
};

function refusal(err: unknown): never {
  if (err instanceof DispatchRefusedError) throw new ApiError(REFUSALS[err.code], err.code, err.message);
  throw err;
}

const isOpen = (s: RunSummary) =>
  isOpenWorkflowState(s.workflowStatus) ||
  // Stored but not (yet) known to Temporal: a start may still come (a retried submission).
  (s.workflowStatus === null && s.status !== 'done' && s.status !== 'failed' && s.status !== 'canceled');

function parseStatuses(raw: string | undefined): CaseStatus[] | undefined {
  if (raw === undefined || raw.trim() === '') return undefined;
  const wanted = raw.split(',').map((s) => s.trim());
  const bad = wanted.filter((s) => !(CASE_STATUSES as readonly string[]).includes(s));
  if (bad.length > 0) {
    throw new ApiError(400, 'E_API_INVALID_REQUEST', 'invalid request: 1 problem(s)', [
      {
        path: 'query.status',
        code: 'invalid_value',
        message: `unknown status ${bad.join(', ')}; one of ${CASE_STATUSES.join(', ')}`,
      },
    ]);
  }
  return wanted as CaseStatus[];
}

function encodeCursor(c: RunListCursor): string {
  return Buffer.from(JSON.stringify({ c: c.createdAt.toISOString(), w: c.workflowId })).toString('base64url');
}

function decodeCursor(raw: string): RunListCursor {
  try {
    const v = z
      .object({ c: z.iso.datetime(), w: z.string().min(1) })
      .parse(JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')));
    return { createdAt: new Date(v.c), workflowId: v.w };
  } catch {
    throw new ApiError(400, 'E_API_INVALID_REQUEST', 'invalid request: 1 problem(s)', [
      { path: 'query.cursor', code: 'invalid_cursor', message: 'pass the next_cursor of the previous page' },
    ]);
  }
}

export async function registerRunRoutes(app: ZodApp, deps: RunRouteDeps): Promise<void> {
  const { config, pool, client, log, metrics, views, errorBody } = deps;
  const startDeps = { client, pool, config, log };
  const readDeps = { client, pool, config };
  const summary = (runId: string) => summarizeRun(readDeps, views, runId);
  /** The 202 body of a submission: a new run is queued; a replayed one is whatever it is now. */
  const acceptance = async (submitted: Submitted) => {
    const current = submitted.replayed ? await summary(submitted.workflowId) : null;
    return {
      summary: current,
      body: {
        run_id: submitted.workflowId,
        workflow_id: submitted.workflowId,
        experiment_id: submitted.experimentId,
        status: current?.status ?? ('queued' as const),
        links: links(config, submitted.workflowId),
      },
    };
  };
  const mustExist = async (runId: string) => {
    if (!(await getRunRecord(pool, runId))) throw new ApiError(404, 'E_RUN_NOT_FOUND', `no run ${runId}`);
  };

  app.post(
    '/v1/runs',
    {
      schema: {
        tags: ['runs'],
        summary: 'Submit a run',
        description:
          'Body: an experiment file (examples/sample-experiment.json) or `{ "experiment_id": N }`. Answers 202 once the Temporal start is durable.',
        headers: idempotencyHeaders,
        body: runRequestBody,
        response: { 202: runAccepted, ...errors(errorBody, 400, 401, 403, 404, 409, 413, 415, 503) },
      },
    },
    async (req, reply) => {
      const principal = req.principal?.name ?? 'anonymous';
      const body = req.body;
      const submitted = await submitRun(startDeps, {
        principal,
        idempotencyKey: req.headers['idempotency-key'],
        operation: 'create-run',
        body,
        dispatch: (tx) =>
          'experiment_id' in body
            ? dispatchExistingExperiment(tx, body.experiment_id, `api:${principal}`).catch(refusal)
            : dispatchExperimentFile(tx, { ...body, triggered_by: body.triggered_by ?? `api:${principal}` }),
      });
      metrics.submitted('create-run', submitted.replayed);
      const { body: accepted } = await acceptance(submitted);
      return reply.code(202).headers(acceptanceHeaders(submitted)).send(accepted);
    },
  );

  app.get(
    '/v1/runs',
    {
      schema: {
        tags: ['runs'],
        summary: 'List runs, newest first',
        querystring: runListQuery,
        response: { 200: runList, ...errors(errorBody, 400, 401, 503) },
      },
    },
    async (req) => {
      const { experiment_id: experimentId, limit, cursor } = req.query;
      const records = await listRunRecords(pool, {
        ...(experimentId !== undefined ? { experimentId } : {}),
        limit: limit + 1,
        ...(cursor ? { after: decodeCursor(cursor) } : {}),
      });
      const page = records.slice(0, limit);
      const runs = await summarizeRuns(readDeps, views, page);
      const last = page[page.length - 1];
      return {
        items: runs.map((s) => renderRun(config, s)),
        next_cursor: records.length > limit && last ? encodeCursor(last) : null,
      };
    },
  );

  app.get(
    '/v1/runs/:run_id',
    {
      schema: {
        tags: ['runs'],
        summary: 'A run: status, case counts, times, Temporal UI link',
        params: runIdParams,
        response: { 200: runSchema, ...errors(errorBody, 400, 401, 404, 503) },
      },
    },
    async (req) => {
      const s = await summary(req.params.run_id);
      if (!s) throw new ApiError(404, 'E_RUN_NOT_FOUND', `no run ${req.params.run_id}`);
      return renderRun(config, s);
    },
  );

  app.get(
    '/v1/runs/:run_id/cases',
    {
      schema: {
        tags: ['runs'],
        summary: "A page of the run's cases in message order",
        params: runIdParams,
        querystring: caseListQuery,
        response: { 200: caseList, ...errors(errorBody, 400, 401, 404) },
      },
    },
    async (req) => {
      const { run_id: runId } = req.params;
      const statuses = parseStatuses(req.query.status);
      await mustExist(runId);
      const rows = await listRunCases(pool, {
        workflowId: runId,
        afterPosition: req.query.cursor ? Number(req.query.cursor) : 0,
        limit: req.query.limit + 1,
        ...(statuses ? { statuses } : {}),
      });
      const page = rows.slice(0, req.query.limit);
      const last = page[page.length - 1];
      return {
        items: page.map((c) => ({
          run_case_id: c.runCaseId,
          data_item_id: c.dataItemId,
          attempt_no: c.attemptNo,
          status: c.status,
          output: c.output,
          error_code: errorCodeOf(c.errorMessage),
          error_message: c.errorMessage,
          final_score: c.finalScore,
          latency_ms: c.latencyMs,
          started_at: c.startedAt,
          finished_at: c.finishedAt,
          scores: c.scores,
        })),
        next_cursor: rows.length > req.query.limit && last ? String(last.position) : null,
      };
    },
  );

  app.get(
    '/v1/runs/:run_id/events',
    {
      schema: {
        tags: ['runs'],
        summary: 'Follow a run (Server-Sent Events)',
        description:
          'text/event-stream. First one `case` event per case in its current status, then one per status change, then one `run` event (the run as GET /v1/runs/{run_id} returns it) when the run has ended; the server then closes the stream. A reconnecting client gets the current statuses again.',
        params: runIdParams,
        response: {
          200: {
            description: 'The event stream.',
            content: { 'text/event-stream': { schema: z.string() } },
          },
          ...errors(errorBody, 400, 401, 404, 503),
        },
      },
    },
    async (req, reply) => {
      const { run_id: runId } = req.params;
      await mustExist(runId);
      if (deps.streams.size >= config.api.maxEventStreams) {
        throw new ApiError(
          503,
          'E_API_TOO_MANY_STREAMS',
          'too many open event streams; retry later',
          undefined,
          {
            'retry-after': '5',
          },
        );
      }
      const abort = new AbortController();
      deps.streams.add(abort);
      const closed = metrics.streamOpened();
      reply.raw.on('close', () => abort.abort());
      reply.hijack();
      try {
        await streamRunEvents(
          reply.raw,
          runId,
          {
            pool,
            pollMs: deps.eventPollMs,
            summary: async () => {
              const s = await summarizeRun(readDeps, views, runId);
              if (!s) throw new Error(`run ${runId} vanished`);
              return { summary: s, open: isOpen(s) };
            },
            renderSummary: (s) => renderRun(config, s),
          },
          abort.signal,
        );
      } catch (err) {
        log.warn({ code: 'E_API_EVENT_STREAM', run_id: runId, err }, 'event stream ended by an error');
      } finally {
        deps.streams.delete(abort);
        closed();
      }
    },
  );

  app.post(
    '/v1/runs/:run_id/cancel',
    {
      schema: {
        tags: ['runs'],
        summary: 'Cancel a run',
        description:
          'Containers in flight are killed and removed, remaining cases become canceled, the experiment is left manual_terminated (as the platform terminate does). Answers 202 at once; follow the run to see it end.',
        params: runIdParams,
        response: { 202: cancelAccepted, ...errors(errorBody, 400, 401, 403, 404, 503) },
      },
    },
    async (req, reply) => {
      const { run_id: runId } = req.params;
      await mustExist(runId);
      const outcome = await requestRunCancel(client, runId);
      const s = await summary(runId);
      return reply.code(202).send({
        run_id: runId,
        cancel: outcome === 'requested' ? ('requested' as const) : ('not_running' as const),
        status: s?.status ?? 'canceled',
        links: links(config, runId),
      });
    },
  );

  app.post(
    '/v1/experiments/:experiment_id/retry-failed',
    {
      schema: {
        tags: ['runs'],
        summary: "Retry an experiment's failed cases (the platform's retry failed)",
        description:
          'Every latest case whose status is exactly failed gets a new attempt (is_latest switched), then a new run of just those. 409 when nothing failed or a run of the experiment is still going.',
        params: experimentIdParams,
        headers: idempotencyHeaders,
        response: { 202: retryAccepted, ...errors(errorBody, 400, 401, 403, 404, 409, 503) },
      },
    },
    async (req, reply) => {
      const principal = req.principal?.name ?? 'anonymous';
      const experimentId = req.params.experiment_id;
      let retried = 0;
      const submitted = await submitRun(startDeps, {
        principal,
        idempotencyKey: req.headers['idempotency-key'],
        operation: 'retry-failed',
        body: { experiment_id: experimentId },
        dispatch: async (tx) => {
          const { message, superseded } = await dispatchRetryFailed(
            tx,
            experimentId,
            `api:${principal}`,
          ).catch(refusal);
          retried = superseded.length;
          return message;
        },
      });
      metrics.submitted('retry-failed', submitted.replayed);
      const { body: accepted, summary: current } = await acceptance(submitted);
      if (submitted.replayed) retried = current?.cases.total ?? 0;
      return reply
        .code(202)
        .headers(acceptanceHeaders(submitted))
        .send({ ...accepted, retried_cases: retried });
    },
  );
}
