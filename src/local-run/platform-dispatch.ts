import type pg from 'pg';
import { withTransaction } from '../db/experiment-repository';
import type { ExperimentRunRequested } from '../domain/message';
import type { ExperimentFile } from './experiment-file';
import { buildMessageFromRows } from './platform-message';

/**
 * Does what the platform's runExperiment does for a file: writes the platform's rows (agent,
 * dataset, items, evaluators, experiment `queued`, one pending attempt-1 run case per item) and
 * builds the v2 message it would publish, with queue_message_id recorded.
 */
export async function dispatchExperimentFile(pool: pg.Pool, file: ExperimentFile): Promise<ExperimentRunRequested> {
  const rows = await withTransaction(pool, async (client) => {
    const id = async (sql: string, params: unknown[]): Promise<number> => {
      const r = await client.query<{ id: number }>(sql, params);
      if (!r.rows[0]) throw new Error(`insert returned no id: ${sql}`);
      return r.rows[0].id;
    };
    const agentId = await id(
      `INSERT INTO agents (agent_key, version, name, runtime_spec_json) VALUES ($1, $2, $3, $4::jsonb)
       ON CONFLICT (agent_key, version) DO UPDATE SET name = EXCLUDED.name, runtime_spec_json = EXCLUDED.runtime_spec_json, updated_at = now()
       RETURNING id`,
      [file.agent.agent_key, file.agent.version, file.agent.name, JSON.stringify(file.agent.runtime_spec_json)],
    );
    // Dataset names are unique on the platform: a re-run of the same file gets a fresh dataset.
    const datasetId = await id(`INSERT INTO datasets (name) VALUES ($1) RETURNING id`, [
      `${file.dataset.name} (${new Date().toISOString()})`,
    ]);
    const items: Array<{ id: number }> = [];
    for (const item of file.dataset.items) {
      const itemId = await id(
        `INSERT INTO data_items (dataset_id, session_jsonl, user_input, reference_output, mock_config)
         VALUES ($1, $2, $3, $4::jsonb, $5::jsonb) RETURNING id`,
        [datasetId, item.session_jsonl, item.user_input, JSON.stringify(item.reference_output ?? {}), item.mock_config ? JSON.stringify(item.mock_config) : null],
      );
      items.push({ id: itemId });
    }
    const evaluators: number[] = [];
    for (const e of file.evaluators) {
      const evaluatorId = await id(
        `INSERT INTO evaluators (evaluator_key, name, prompt_template, base_url, model_name, api_style, api_key)
         VALUES ($1, $2, $3, COALESCE($4, 'https://ark.cn-beijing.volces.com/api/v3/chat/completions'), COALESCE($5, 'kimi-k2.5'), COALESCE($6, 'openai'), COALESCE($7, ''))
         ON CONFLICT (evaluator_key) DO UPDATE SET name = EXCLUDED.name, prompt_template = EXCLUDED.prompt_template,
           base_url = EXCLUDED.base_url, model_name = EXCLUDED.model_name, api_style = EXCLUDED.api_style,
           api_key = EXCLUDED.api_key, updated_at = now()
         RETURNING id`,
        [e.evaluator_key, e.name, e.prompt_template, e.base_url ?? null, e.model_name ?? null, e.api_style ?? null, e.api_key ?? null],
      );
      evaluators.push(evaluatorId);
    }
    const experimentId = await id(
      `INSERT INTO experiments (name, dataset_id, agent_id, queue_status, queued_at, created_by, updated_by)
       VALUES ($1, $2, $3, 'queued', now(), $4, $4) RETURNING id`,
      [file.name, datasetId, agentId, file.triggered_by],
    );
    for (const evaluatorId of evaluators) {
      await client.query('INSERT INTO experiment_evaluators (experiment_id, evaluator_id) VALUES ($1, $2)', [experimentId, evaluatorId]);
    }
    const cases: Array<{ runCaseId: number }> = [];
    for (const { id: itemId } of items) {
      const runCaseId = await id(
        `INSERT INTO run_cases (experiment_id, data_item_id, agent_id, attempt_no, is_latest, status)
         VALUES ($1, $2, $3, 1, TRUE, 'pending') RETURNING id`,
        [experimentId, itemId, agentId],
      );
      cases.push({ runCaseId });
    }
    return { experimentId, cases };
  });

  return buildMessageFromRows(pool, rows.experimentId, rows.cases.map((c) => c.runCaseId), file.triggered_by);
}
