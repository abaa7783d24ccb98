import { randomUUID } from 'node:crypto';
import { listExperimentEvaluators } from '../db/evaluator-repository';
import type { Database } from '../db/experiment-repository';
import { experimentRunRequestedSchema, type ExperimentRunRequested } from '../domain/message';
import { scorerFromEvaluator } from '../domain/scoring-input';

/**
 * Builds the v2 message for some run cases of an experiment from the platform's own rows, the way
 * platform/lib/runner.ts does (ids as strings; scorers from experiment_evaluators ⨝ evaluators in
 * evaluators.created_at order; the agent's current runtime spec), then records queue_message_id as
 * the platform does after publishing.
 */
export async function buildMessageFromRows(
  pool: Database,
  experimentId: number,
  runCaseIds: number[],
  triggeredBy: string,
): Promise<ExperimentRunRequested> {
  const { rows: experiments } = await pool.query<{
    dataset_id: number;
    dataset_name: string;
    agent_id: number;
    agent_name: string;
    agent_key: string;
    version: string;
    runtime_spec_json: Record<string, unknown>;
  }>(
    `SELECT d.id AS dataset_id, d.name AS dataset_name, a.id AS agent_id, a.name AS agent_name, a.agent_key, a.version, a.runtime_spec_json
       FROM experiments e JOIN datasets d ON d.id = e.dataset_id JOIN agents a ON a.id = e.agent_id
      WHERE e.id = $1`,
    [experimentId],
  );
  const exp = experiments[0];
  if (!exp) throw new Error(`experiment ${experimentId} not found`);
  const scorers = (await listExperimentEvaluators(pool, experimentId)).map(scorerFromEvaluator);
  const { rows: cases } = await pool.query<{
    id: number;
    data_item_id: number;
    attempt_no: number;
    session_jsonl: string;
    user_input: string;
    reference_output: unknown;
    mock_config: unknown;
  }>(
    `SELECT rc.id, rc.data_item_id, rc.attempt_no, di.session_jsonl, di.user_input, di.reference_output, di.mock_config
       FROM run_cases rc JOIN data_items di ON di.id = rc.data_item_id
      WHERE rc.experiment_id = $1 AND rc.id = ANY($2::bigint[]) ORDER BY rc.id`,
    [experimentId, runCaseIds],
  );
  const messageId = randomUUID();
  const message = experimentRunRequestedSchema.parse({
    message_type: 'experiment.run.requested',
    schema_version: 'v2',
    message_id: messageId,
    produced_at: new Date().toISOString(),
    source: { service: 'benchctl', queue: 'local' },
    experiment: { id: String(experimentId), triggered_by: triggeredBy },
    dataset: { id: String(exp.dataset_id), name: exp.dataset_name },
    agent: {
      id: String(exp.agent_id),
      name: exp.agent_name,
      agent_key: exp.agent_key,
      version: exp.version,
      runtime_spec_json: exp.runtime_spec_json,
    },
    scorers: scorers.map((s) => ({ ...s, id: String(s.id) })),
    run_cases: cases.map((c) => ({
      run_case_id: String(c.id),
      data_item_id: String(c.data_item_id),
      attempt_no: c.attempt_no,
      session_jsonl: c.session_jsonl,
      user_input: c.user_input,
      reference_output: c.reference_output ?? {},
      mock_config: c.mock_config ?? null,
    })),
  });
  await pool.query('UPDATE experiments SET queue_message_id = $2, updated_at = now() WHERE id = $1', [
    experimentId,
    messageId,
  ]);
  return message;
}
