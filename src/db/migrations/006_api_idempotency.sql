-- Idempotency-Key records of `benchctl api` (src/api/idempotency.ts): the same caller, key and body
-- get the same run back; the same key with another body is refused. Keys are scoped by the caller
-- (its token name), so two clients cannot collide on a key.
CREATE TABLE IF NOT EXISTS agentbench_api_idempotency (
  principal TEXT NOT NULL,
  idempotency_key TEXT NOT NULL,
  operation TEXT NOT NULL,
  request_sha256 TEXT NOT NULL,
  -- Set in the same transaction that wrote the platform rows and the run request.
  workflow_id TEXT,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (principal, idempotency_key)
);
CREATE INDEX IF NOT EXISTS idx_agentbench_api_idempotency_created ON agentbench_api_idempotency (created_at);
