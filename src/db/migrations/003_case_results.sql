-- The container phase's complete record of one case (output, logs, exit code, timings), written
-- before that phase returns. The final persist into run_cases reads it, so a failure after the
-- agent finished never re-runs the agent, and a retried container phase finds its own result.
CREATE TABLE IF NOT EXISTS agentbench_case_results (
  workflow_id TEXT NOT NULL,
  run_case_id BIGINT NOT NULL,
  result JSONB NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (workflow_id, run_case_id)
);
