-- Content-addressed results (src/cache/result-cache-key.ts): a case whose key is here and not
-- expired reuses the stored record and trajectory instead of starting a container. Only successful
-- results are stored, so a failed task always runs again.
CREATE TABLE IF NOT EXISTS agentbench_result_cache (
  cache_key TEXT PRIMARY KEY,
  task_type TEXT NOT NULL,
  image_id TEXT NOT NULL,
  result JSONB NOT NULL,
  trajectory JSONB NOT NULL,
  source_workflow_id TEXT NOT NULL,
  source_run_case_id BIGINT NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  expires_at TIMESTAMPTZ NOT NULL,
  hits BIGINT NOT NULL DEFAULT 0,
  last_hit_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS idx_agentbench_result_cache_expires ON agentbench_result_cache(expires_at);

-- The tasks of a batch file (`benchctl run tasks.jsonl`), one per data item of its dataset: the
-- platform's data_items hold the description as user_input; the rest of the task is ours.
CREATE TABLE IF NOT EXISTS agentbench_batch_tasks (
  data_item_id BIGINT PRIMARY KEY,
  task_id TEXT NOT NULL,
  task_type TEXT NOT NULL,
  task JSONB NOT NULL
);
