/**
 * The plain data an experiment report is rendered from: what the loader read from Postgres, already
 * cut to the caps of report-limits and with secrets redacted. No I/O, no HTML.
 */

/**
 * The start and possibly the end of a text that may be longer than what was kept. `totalChars` is
 * the length of the whole text in code points; when it equals the kept length, head + tail is the
 * whole text.
 */
export interface TextExcerpt {
  head: string;
  tail: string;
  totalChars: number;
}

export interface ReportExperiment {
  id: number;
  name: string;
  /** experiments.queue_status (CONTRACT §3.3). */
  queueStatus: string;
  agent: { id: number | null; key: string | null; version: string | null; name: string | null };
  dataset: { id: number | null; name: string | null };
  triggeredBy: string | null;
  createdAt: Date | null;
  queuedAt: Date | null;
  startedAt: Date | null;
  finishedAt: Date | null;
  deleted: boolean;
}

/** One workflow run of the experiment (agentbench_run_requests). */
export interface ReportRun {
  workflowId: string;
  messageId: string;
  createdAt: Date;
  caseCount: number;
}

export interface ReportScore {
  scorerKey: string;
  score: number;
  reason: TextExcerpt;
}

/** The latest attempt of one data item (run_cases.is_latest) with what our tables add to it. */
export interface ReportCase {
  runCaseId: number;
  dataItemId: number;
  attemptNo: number;
  status: string;
  startedAt: Date | null;
  finishedAt: Date | null;
  latencyMs: number | null;
  finalScore: number | null;
  inputTokens: number | null;
  outputTokens: number | null;
  /** From agentbench_case_results: the agent's exit code (null when the container phase never ran). */
  exitCode: number | null;
  containerPhaseMs: number | null;
  /** The run (workflow) that ran this attempt. */
  workflowId: string | null;
  /** Steps of run_cases.agent_trajectory, where they came from, and the spans stored for the case. */
  trajectorySteps: number | null;
  trajectorySource: string | null;
  spanCount: number;
  scores: ReportScore[];
  /** Short excerpts for the table row. */
  outputPreview: TextExcerpt | null;
  errorPreview: TextExcerpt | null;
  /** The expandable view; null when the report's details budget was spent before this case. */
  details: ReportCaseDetails | null;
}

export interface ReportCaseDetails {
  output: TextExcerpt | null;
  errorMessage: TextExcerpt | null;
  logs: TextExcerpt | null;
}

export interface ScorerSummary {
  scorerKey: string;
  /** Score rows of latest cases, sentinels included. */
  count: number;
  /** Real verdicts (score ≠ −1). */
  verdicts: number;
  /** The judge's "no verdict" sentinel −1 (CONTRACT §7.2). */
  sentinels: number;
  /** Over verdicts only; null without any. */
  mean: number | null;
  min: number | null;
  max: number | null;
  /** Verdicts of 1 (the judge's "pass", §7.3) and their share of the verdicts. */
  passes: number;
  passRate: number | null;
  /** How many score rows had each value, the sentinel included; ascending by score. */
  distribution: Array<{ score: number; count: number }>;
}

/** One bin of the latency histogram: [fromMs, toMs), the last bin closed. */
export interface LatencyBin {
  fromMs: number;
  toMs: number;
  count: number;
}

/** Data items whose previous attempt ended `from` and whose latest attempt is `to` (a rerun). */
export interface AttemptChange {
  from: string;
  to: string;
  count: number;
}

export interface ExperimentReport {
  generatedAt: Date;
  experiment: ReportExperiment;
  runs: ReportRun[];
  /** Latest cases per status, all of them (not only the rows shown). */
  statusCounts: Record<string, number>;
  totalCases: number;
  /** Earlier attempts (is_latest = false), superseded by a rerun. */
  supersededAttempts: number;
  scorers: ScorerSummary[];
  /** Mean of run_cases.final_score over the latest cases that have one. */
  finalScoreMean: number | null;
  finalScoreCount: number;
  /** run_cases.latency_ms of the latest cases that have one, binned (all of them, not only the rows shown). */
  latencyBins: LatencyBin[];
  /** Latest attempts above 1, by the status of the attempt before and their own. */
  attemptChanges: AttemptChange[];
  /** Failures first, then active cases, then successes; at most REPORT_LIMITS.maxCaseRows. */
  cases: ReportCase[];
  /** Latest cases beyond maxCaseRows. */
  casesNotShown: number;
}
