-- The orchestrator's own tables. Workflow payloads carry ids only; what a message said lives here.

-- The validated message without run_cases and with secrets redacted.
CREATE TABLE IF NOT EXISTS agentbench_run_requests (
  workflow_id TEXT PRIMARY KEY,
  experiment_id BIGINT NOT NULL,
  message_id TEXT NOT NULL,
  request JSONB NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- One row per run case of the message; position keeps message order for cursors over huge runs.
CREATE TABLE IF NOT EXISTS agentbench_case_inputs (
  workflow_id TEXT NOT NULL REFERENCES agentbench_run_requests(workflow_id) ON DELETE CASCADE,
  run_case_id BIGINT NOT NULL,
  position INT NOT NULL,
  case_input JSONB NOT NULL,
  PRIMARY KEY (workflow_id, run_case_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_agentbench_case_inputs_position ON agentbench_case_inputs(workflow_id, position);
