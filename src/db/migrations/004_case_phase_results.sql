-- What the trajectory and scoring phases of a case produced, next to the container phase's record,
-- so each phase is idempotent (a retry reuses what is stored) and the final persist only reads.
ALTER TABLE agentbench_case_results ADD COLUMN IF NOT EXISTS trajectory JSONB;
ALTER TABLE agentbench_case_results ADD COLUMN IF NOT EXISTS scores JSONB;
