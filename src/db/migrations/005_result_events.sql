-- Transactional outbox of result events (src/db/result-event-outbox.ts): a row is written in the same
-- transaction as the terminal status it reports, and relayed to RabbitMQ afterwards
-- (src/result-events/result-event-relay.ts), so a broker outage delays events but never loses one
-- and never holds up a case. event_id is what consumers deduplicate by; a re-relay sends the same one.
CREATE TABLE IF NOT EXISTS agentbench_result_events (
  seq BIGSERIAL PRIMARY KEY,
  event_id UUID NOT NULL UNIQUE DEFAULT gen_random_uuid(),
  -- The AMQP routing key: run_case.finished | experiment_run.finished.
  event_type TEXT NOT NULL,
  -- What finished: the run case id, or the run's workflow id. One event per terminal transition.
  subject TEXT NOT NULL,
  experiment_id BIGINT NOT NULL,
  workflow_id TEXT,
  payload JSONB NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  published_at TIMESTAMPTZ,
  UNIQUE (event_type, subject)
);
CREATE INDEX IF NOT EXISTS idx_agentbench_result_events_pending
  ON agentbench_result_events (seq) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS idx_agentbench_result_events_published
  ON agentbench_result_events (published_at) WHERE published_at IS NOT NULL;

