import type pg from 'pg';
import { z } from 'zod';
import type {
  ExperimentReport,
  ReportCase,
  ReportCaseDetails,
  ReportExperiment,
  ReportRun,
  ReportScore,
  TextExcerpt,
} from './experiment-report-model';
import { SecretRedactor } from './report-redaction';
import { REPORT_LIMITS, type ReportLimits } from './report-limits';
import { latencyHistogram, summarizeScores } from './experiment-report-summary';

/**
 * Reads everything an experiment report shows, in one read-only snapshot transaction, into the
 * plain model of experiment-report-model. Long texts are cut in SQL (a 1 GB log is never fetched),
 * the expandable views are fetched only within the details budget, and every text is redacted.
 */

/** Failures first, then what is still in flight; success (and any unknown status) last. */
const STATUS_ORDER = [
  'failed',
  'timeout',
  'canceled',
  'scoring',
  'trajectory',
  'running',
  'queued',
  'pending',
];
const DETAILS_BATCH = 500;

const experimentId = z.number().int().positive();
const int = z.number().int();
const nullableDate = z.date().nullable();

const experimentRow = z.object({
  id: int,
  name: z.string(),
  queue_status: z.string(),
  created_by: z.string().nullable(),
  created_at: nullableDate,
  queued_at: nullableDate,
  started_at: nullableDate,
  finished_at: nullableDate,
  deleted: z.boolean(),
  agent_id: int.nullable(),
  agent_key: z.string().nullable(),
  agent_version: z.string().nullable(),
  agent_name: z.string().nullable(),
  dataset_id: int.nullable(),
  dataset_name: z.string().nullable(),
});

const runRow = z.object({
  workflow_id: z.string(),
  message_id: z.string(),
  created_at: z.date(),
  triggered_by: z.string().nullable(),
  case_count: int,
});

const caseRow = z.object({
  id: int,
  data_item_id: int,
  attempt_no: int,
  status: z.string(),
  started_at: nullableDate,
  finished_at: nullableDate,
  latency_ms: z.number().nullable(),
  final_score: z.number().nullable(),
  input_tokens: z.number().nullable(),
  output_tokens: z.number().nullable(),
  inspect_eval_id: z.string().nullable(),
  trajectory_steps: int.nullable(),
  trajectory_source: z.string().nullable(),
  output_preview: z.string().nullable(),
  output_chars: int.nullable(),
  error_preview: z.string().nullable(),
  error_chars: int.nullable(),
  logs_chars: int.nullable(),
});
type CaseRow = z.output<typeof caseRow>;

const detailsRow = z.object({
  id: int,
  output_head: z.string().nullable(),
  error_head: z.string().nullable(),
  logs_head: z.string().nullable(),
  logs_tail: z.string().nullable(),
});

const scoreRow = z.object({
  run_case_id: int,
  scorer_key: z.string(),
  score: z.number(),
  reason: z.string(),
  reason_chars: int,
});

const caseResultRow = z.object({
  run_case_id: int,
  workflow_id: z.string(),
  // JSON values of our own records; older rows may lack them.
  exit_code: z.number().int().nullable().catch(null),
  container_phase_ms: z.number().nullable().catch(null),
});

/** agent_output as a reader wants it: a JSON string as its text, anything else pretty-printed. */
const OUTPUT_TEXT = `CROSS JOIN LATERAL (
  SELECT CASE WHEN rc.agent_output IS NULL OR jsonb_typeof(rc.agent_output) = 'null' THEN NULL
              WHEN jsonb_typeof(rc.agent_output) = 'string' THEN rc.agent_output #>> '{}'
              ELSE jsonb_pretty(rc.agent_output) END AS text) o`;

interface LoadReportOptions {
  limits?: ReportLimits;
  /** The report's "generated at" (tests pin it). */
  now?: Date;
}

/** The report model of an experiment, or null when there is no such experiment. */
export async function loadExperimentReport(
  pool: pg.Pool,
  id: number,
  opts: LoadReportOptions = {},
): Promise<ExperimentReport | null> {
  const expId = experimentId.parse(id);
  const limits = opts.limits ?? REPORT_LIMITS;
  const client = await pool.connect();
  try {
    // One snapshot: counts, rows and scores agree even while a run is writing.
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const report = await loadInSnapshot(client, expId, limits, opts.now ?? new Date());
    await client.query('COMMIT');
    client.release();
    return report;
  } catch (err) {
    client.release(err as Error);
    throw err;
  }
}

async function loadInSnapshot(
  client: pg.PoolClient,
  expId: number,
  limits: ReportLimits,
  generatedAt: Date,
): Promise<ExperimentReport | null> {
  const exp = await client.query(
    `SELECT e.id, e.name, e.queue_status, e.created_by, e.created_at, e.queued_at, e.started_at, e.finished_at,
            (e.is_deleted OR e.deleted_at IS NOT NULL) AS deleted,
            a.id AS agent_id, a.agent_key, a.version AS agent_version, a.name AS agent_name,
            d.id AS dataset_id, d.name AS dataset_name
       FROM experiments e
       LEFT JOIN agents a ON a.id = e.agent_id
       LEFT JOIN datasets d ON d.id = e.dataset_id
      WHERE e.id = $1`,
    [expId],
  );
  if (!exp.rows[0]) return null;
  const e = experimentRow.parse(exp.rows[0]);

  // Every evaluator key of the database, not only the linked ones: scores may come from an
  // evaluator unlinked since, and old rows may carry any of them.
  const secrets = await client.query<{ api_key: string }>(
    `SELECT DISTINCT api_key FROM evaluators WHERE api_key <> ''`,
  );
  const redact = new SecretRedactor(secrets.rows.map((r) => r.api_key));

  const runs = (
    await client.query(
      `SELECT r.workflow_id, r.message_id, r.created_at, r.request->'experiment'->>'triggered_by' AS triggered_by,
              (SELECT count(*) FROM agentbench_case_inputs ci WHERE ci.workflow_id = r.workflow_id)::int AS case_count
         FROM agentbench_run_requests r
        WHERE r.experiment_id = $1
        ORDER BY r.created_at, r.workflow_id`,
      [expId],
    )
  ).rows.map((raw) => runRow.parse(raw));

  const counts = await client.query<{ status: string; is_latest: boolean; n: number }>(
    `SELECT status, is_latest, count(*)::int AS n FROM run_cases WHERE experiment_id = $1 GROUP BY status, is_latest`,
    [expId],
  );
  const statusCounts: Record<string, number> = {};
  let totalCases = 0;
  let supersededAttempts = 0;
  for (const row of counts.rows) {
    if (!row.is_latest) {
      supersededAttempts += row.n;
      continue;
    }
    statusCounts[row.status] = (statusCounts[row.status] ?? 0) + row.n;
    totalCases += row.n;
  }

  const finals = await client.query<{ mean: number | null; n: number }>(
    `SELECT avg(final_score) AS mean, count(final_score)::int AS n
       FROM run_cases WHERE experiment_id = $1 AND is_latest = TRUE`,
    [expId],
  );

  const latencies = (
    await client.query<{ latency_ms: number }>(
      `SELECT latency_ms::float8 AS latency_ms FROM run_cases
        WHERE experiment_id = $1 AND is_latest = TRUE AND latency_ms IS NOT NULL`,
      [expId],
    )
  ).rows.map((r) => Number(r.latency_ms));

  // A rerun's effect: the attempt before each latest one (platform attempts are numbered 1, 2, …).
  const attemptChanges = (
    await client.query<{ from_status: string; to_status: string; n: number }>(
      `SELECT prev.status AS from_status, rc.status AS to_status, count(*)::int AS n
         FROM run_cases rc
         JOIN run_cases prev ON prev.experiment_id = rc.experiment_id AND prev.data_item_id = rc.data_item_id
                            AND prev.attempt_no = rc.attempt_no - 1
        WHERE rc.experiment_id = $1 AND rc.is_latest = TRUE AND rc.attempt_no > 1
        GROUP BY prev.status, rc.status
        ORDER BY n DESC, prev.status, rc.status`,
      [expId],
    )
  ).rows.map((r) => ({ from: r.from_status, to: r.to_status, count: r.n }));

  const evaluatorKeys = (
    await client.query<{ evaluator_key: string }>(
      `SELECT e.evaluator_key FROM experiment_evaluators ee JOIN evaluators e ON e.id = ee.evaluator_id
        WHERE ee.experiment_id = $1 ORDER BY e.created_at, e.id`,
      [expId],
    )
  ).rows.map((r) => r.evaluator_key);

  const scores = (
    await client.query(
      `SELECT s.run_case_id, s.scorer_key, s.score, left(s.reason, $2) AS reason, length(s.reason) AS reason_chars
         FROM run_cases rc JOIN run_case_scores s ON s.run_case_id = rc.id
        WHERE rc.experiment_id = $1 AND rc.is_latest = TRUE
        ORDER BY s.run_case_id, s.id`,
      [expId, limits.reasonChars],
    )
  ).rows.map((raw) => scoreRow.parse(raw));

  const caseRows = (
    await client.query(
      `SELECT rc.id, rc.data_item_id, rc.attempt_no, rc.status, rc.started_at, rc.finished_at, rc.latency_ms,
              rc.final_score, rc.input_tokens, rc.output_tokens, rc.inspect_eval_id,
              CASE WHEN jsonb_typeof(rc.agent_trajectory) = 'array' THEN jsonb_array_length(rc.agent_trajectory) END AS trajectory_steps,
              rc.usage_json->>'trajectory_source' AS trajectory_source,
              left(o.text, $3) AS output_preview, length(o.text) AS output_chars,
              left(rc.error_message, $3) AS error_preview, length(rc.error_message) AS error_chars,
              length(rc.logs) AS logs_chars
         FROM run_cases rc ${OUTPUT_TEXT}
        WHERE rc.experiment_id = $1 AND rc.is_latest = TRUE
        ORDER BY coalesce(array_position($2::text[], rc.status), ${STATUS_ORDER.length + 1}), rc.id
        LIMIT $4`,
      [expId, STATUS_ORDER, limits.previewChars, limits.maxCaseRows],
    )
  ).rows.map((raw) => caseRow.parse(raw));

  const workflowByCase = new Map<number, string>();
  const caseInputs = await client.query<{ run_case_id: number; workflow_id: string }>(
    `SELECT DISTINCT ON (ci.run_case_id) ci.run_case_id, ci.workflow_id
       FROM agentbench_run_requests r JOIN agentbench_case_inputs ci ON ci.workflow_id = r.workflow_id
      WHERE r.experiment_id = $1
      ORDER BY ci.run_case_id, r.created_at DESC`,
    [expId],
  );
  for (const r of caseInputs.rows) workflowByCase.set(r.run_case_id, r.workflow_id);

  const resultByCase = new Map<number, z.output<typeof caseResultRow>>();
  const caseResults = await client.query(
    `SELECT DISTINCT ON (cr.run_case_id) cr.run_case_id, cr.workflow_id,
            cr.result->'exitCode' AS exit_code, cr.result->'timings'->'containerPhaseMs' AS container_phase_ms
       FROM agentbench_run_requests r JOIN agentbench_case_results cr ON cr.workflow_id = r.workflow_id
      WHERE r.experiment_id = $1
      ORDER BY cr.run_case_id, cr.created_at DESC`,
    [expId],
  );
  for (const raw of caseResults.rows) {
    const r = caseResultRow.parse(raw);
    resultByCase.set(r.run_case_id, r);
  }

  const spanCounts = await client.query<{ run_case_id: number; spans: number }>(
    `SELECT t.run_case_id, count(*)::int AS spans
       FROM run_cases rc JOIN otel_traces t ON t.run_case_id = rc.id
      WHERE rc.experiment_id = $1 AND rc.is_latest = TRUE AND NOT t.is_deleted
      GROUP BY t.run_case_id`,
    [expId],
  );
  const spansByCase = new Map(spanCounts.rows.map((r) => [r.run_case_id, r.spans]));

  const details = await loadDetails(client, caseRows, limits, redact);

  const scoresByCase = new Map<number, ReportScore[]>();
  for (const s of scores) {
    const list = scoresByCase.get(s.run_case_id) ?? [];
    list.push({
      scorerKey: s.scorer_key,
      score: s.score,
      reason: redact.excerpt({ head: s.reason, tail: '', totalChars: s.reason_chars }),
    });
    scoresByCase.set(s.run_case_id, list);
  }

  const cases = caseRows.map((c): ReportCase => {
    const result = resultByCase.get(c.id);
    return {
      runCaseId: c.id,
      dataItemId: c.data_item_id,
      attemptNo: c.attempt_no,
      status: c.status,
      startedAt: c.started_at,
      finishedAt: c.finished_at,
      latencyMs: c.latency_ms,
      finalScore: c.final_score,
      inputTokens: c.input_tokens,
      outputTokens: c.output_tokens,
      exitCode: result?.exit_code ?? null,
      containerPhaseMs: result?.container_phase_ms ?? null,
      workflowId: result?.workflow_id ?? workflowByCase.get(c.id) ?? ourWorkflowId(c.inspect_eval_id),
      trajectorySteps: c.trajectory_steps,
      trajectorySource: c.trajectory_source,
      spanCount: spansByCase.get(c.id) ?? 0,
      scores: scoresByCase.get(c.id) ?? [],
      outputPreview: excerpt(c.output_preview, c.output_chars, redact),
      errorPreview: excerpt(c.error_preview, c.error_chars, redact),
      details: details.get(c.id) ?? null,
    };
  });

  const experiment: ReportExperiment = {
    id: e.id,
    name: e.name,
    queueStatus: e.queue_status,
    agent: { id: e.agent_id, key: e.agent_key, version: e.agent_version, name: e.agent_name },
    dataset: { id: e.dataset_id, name: e.dataset_name },
    // What the latest message said (CONTRACT §2.1), else who created the row.
    triggeredBy: runs.at(-1)?.triggered_by ?? e.created_by,
    createdAt: e.created_at,
    queuedAt: e.queued_at,
    startedAt: e.started_at,
    finishedAt: e.finished_at,
    deleted: e.deleted,
  };
  const reportRuns: ReportRun[] = runs.map((r) => ({
    workflowId: r.workflow_id,
    messageId: r.message_id,
    createdAt: r.created_at,
    caseCount: r.case_count,
  }));

  return {
    generatedAt,
    experiment,
    runs: reportRuns,
    statusCounts,
    totalCases,
    supersededAttempts,
    scorers: summarizeScores(
      scores.map((s) => ({ scorerKey: s.scorer_key, score: s.score })),
      evaluatorKeys,
    ),
    finalScoreMean: finals.rows[0]?.mean ?? null,
    finalScoreCount: finals.rows[0]?.n ?? 0,
    latencyBins: latencyHistogram(latencies),
    attemptChanges,
    cases,
    casesNotShown: Math.max(0, totalCases - cases.length),
  };
}

/**
 * The expandable views, for cases in report order until the details budget is spent. What each
 * view costs is known from the lengths of the first query, so nothing beyond the budget is read.
 */
async function loadDetails(
  client: pg.PoolClient,
  cases: CaseRow[],
  limits: ReportLimits,
  redact: SecretRedactor,
): Promise<Map<number, ReportCaseDetails>> {
  const chosen: CaseRow[] = [];
  let budget = limits.detailsBudgetChars;
  for (const c of cases) {
    const cost =
      Math.min(c.output_chars ?? 0, limits.outputChars) +
      Math.min(c.error_chars ?? 0, limits.errorChars) +
      Math.min(c.logs_chars ?? 0, limits.logsHeadChars + limits.logsTailChars);
    if (cost > budget) break;
    budget -= cost;
    chosen.push(c);
  }
  const out = new Map<number, ReportCaseDetails>();
  const byId = new Map(chosen.map((c) => [c.id, c]));
  for (let start = 0; start < chosen.length; start += DETAILS_BATCH) {
    const ids = chosen.slice(start, start + DETAILS_BATCH).map((c) => c.id);
    const { rows } = await client.query(
      `SELECT rc.id,
              left(o.text, $2) AS output_head,
              left(rc.error_message, $3) AS error_head,
              left(rc.logs, $4) AS logs_head,
              CASE WHEN length(rc.logs) > $4 + $5 THEN right(rc.logs, $5) ELSE substr(rc.logs, $4 + 1) END AS logs_tail
         FROM run_cases rc ${OUTPUT_TEXT}
        WHERE rc.id = ANY($1::bigint[])`,
      [ids, limits.outputChars, limits.errorChars, limits.logsHeadChars, limits.logsTailChars],
    );
    for (const raw of rows) {
      const d = detailsRow.parse(raw);
      const c = byId.get(d.id);
      if (!c) continue;
      out.set(d.id, {
        output: excerpt(d.output_head, c.output_chars, redact),
        errorMessage: excerpt(d.error_head, c.error_chars, redact),
        logs:
          d.logs_head === null || c.logs_chars === null
            ? null
            : redact.excerpt({ head: d.logs_head, tail: d.logs_tail ?? '', totalChars: c.logs_chars }),
      });
    }
  }
  return out;
}

function excerpt(head: string | null, totalChars: number | null, redact: SecretRedactor): TextExcerpt | null {
  if (head === null || totalChars === null) return null;
  return redact.excerpt({ head, tail: '', totalChars });
}

/** inspect_eval_id holds our workflow id (docs/architecture.md); rows of the Python consumer hold inspect's. */
function ourWorkflowId(inspectEvalId: string | null): string | null {
  return inspectEvalId?.startsWith('experiment-') ? inspectEvalId : null;
}
