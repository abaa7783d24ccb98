import type { PoolClient } from 'pg';
import { withTransaction, type Database } from '../db/experiment-repository';
import { supersedeFailedCases, type SupersededCase } from '../db/run-case-repository';
import type { ExperimentRunRequested } from '../domain/message';
import type { ExperimentFile } from './experiment-file';
import { buildMessageFromRows } from './platform-message';

/**
 * Does what the platform's runExperiment does for a file: writes the platform's rows (agent,
 * dataset, items, evaluators, experiment `queued`, one pending attempt-1 run case per item) and
 * builds the v2 message it would publish, with queue_message_id recorded. `withItems` writes rows of
 * ours about the new data items (in file order) in the same transaction.
 */
export async function dispatchExperimentFile(
  db: Database,
  file: ExperimentFile,
  withItems?: (client: PoolClient, itemIds: number[]) => Promise<void>,
): Promise<ExperimentRunRequested> {
  const rows = await withTransaction(db, async (client) => {
    const id = async (sql: string, params: unknown[]): Promise<number> => {
      const r = await client.query<{ id: number }>(sql, params);
      if (!r.rows[0]) throw new Error(`insert returned no id: ${sql}`);
      return r.rows[0].id;
    };
    const agentId = await id(
      `INSERT INTO agents (agent_key, version, name, runtime_spec_json) VALUES ($1, $2, $3, $4::jsonb)
       ON CONFLICT (agent_key, version) DO UPDATE SET name = EXCLUDED.name, runtime_spec_json = EXCLUDED.runtime_spec_json, updated_at = now()
       RETURNING id`,
      [
        file.agent.agent_key,
        file.agent.version,
        file.agent.name,
        JSON.stringify(file.agent.runtime_spec_json),
      ],
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
        [
          datasetId,
          item.session_jsonl,
          item.user_input,
          JSON.stringify(item.reference_output ?? {}),
          item.mock_config ? JSON.stringify(item.mock_config) : null,
        ],
      );
      items.push({ id: itemId });
    }
    await withItems?.(
      client,
      items.map((i) => i.id),
    );
    const evaluators: number[] = [];
    for (const e of file.evaluators) {
      const evaluatorId = await id(
        `INSERT INTO evaluators (evaluator_key, name, prompt_template, base_url, model_name, api_style, api_key)
         VALUES ($1, $2, $3, COALESCE($4, 'https://ark.cn-beijing.volces.com/api/v3/chat/completions'), COALESCE($5, 'kimi-k2.5'), COALESCE($6, 'openai'), COALESCE($7, ''))
         ON CONFLICT (evaluator_key) DO UPDATE SET name = EXCLUDED.name, prompt_template = EXCLUDED.prompt_template,
           base_url = EXCLUDED.base_url, model_name = EXCLUDED.model_name, api_style = EXCLUDED.api_style,
           api_key = EXCLUDED.api_key, updated_at = now()
         RETURNING id`,
        [
          e.evaluator_key,
          e.name,
          e.prompt_template,
          e.base_url ?? null,
          e.model_name ?? null,
          e.api_style ?? null,
          e.api_key ?? null,
        ],
      );
      evaluators.push(evaluatorId);
    }
    const experimentId = await id(
      `INSERT INTO experiments (name, dataset_id, agent_id, queue_status, queued_at, created_by, updated_by)
       VALUES ($1, $2, $3, 'queued', now(), $4, $4) RETURNING id`,
      [file.name, datasetId, agentId, file.triggered_by],
    );
    for (const evaluatorId of evaluators) {
      await client.query('INSERT INTO experiment_evaluators (experiment_id, evaluator_id) VALUES ($1, $2)', [
        experimentId,
        evaluatorId,
      ]);
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

  return buildMessageFromRows(
    db,
    rows.experimentId,
    rows.cases.map((c) => c.runCaseId),
    file.triggered_by,
  );
}

/** The experiment cannot be dispatched as asked (its state, or nothing to run); `code` says why. */
export class DispatchRefusedError extends Error {
  override name = 'DispatchRefusedError';
  constructor(
    readonly code:
      'E_EXPERIMENT_NOT_FOUND' | 'E_EXPERIMENT_NOT_RUNNABLE' | 'E_EXPERIMENT_BUSY' | 'E_NO_FAILED_CASES',
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}

/** Locks the experiment row for the transaction; refuses a missing or deleted one. */
async function lockLiveExperiment(
  client: PoolClient,
  experimentId: number,
): Promise<{ queueStatus: string; datasetId: number; agentId: number }> {
  const { rows } = await client.query<{ queue_status: string; dataset_id: number; agent_id: number }>(
    `SELECT queue_status, dataset_id, agent_id FROM experiments
      WHERE id = $1 AND deleted_at IS NULL AND is_deleted = FALSE FOR UPDATE`,
    [experimentId],
  );
  const row = rows[0];
  if (!row)
    throw new DispatchRefusedError('E_EXPERIMENT_NOT_FOUND', `experiment ${experimentId} does not exist`);
  return { queueStatus: row.queue_status, datasetId: row.dataset_id, agentId: row.agent_id };
}

/**
 * The platform's runExperiment (its Run button) for an experiment already in its tables (CONTRACT
 * §3.3, §3.6): only from `idle` or `manual_terminated`; the previous latest rows are superseded by
 * a new attempt per data item of the dataset, the experiment is queued, and the v2 message is built
 * with queue_message_id recorded. One transaction (the caller's, when given a client in one).
 */
export async function dispatchExistingExperiment(
  db: Database,
  experimentId: number,
  triggeredBy: string,
): Promise<ExperimentRunRequested> {
  return withTransaction(db, async (client) => {
    const exp = await lockLiveExperiment(client, experimentId);
    if (exp.queueStatus !== 'idle' && exp.queueStatus !== 'manual_terminated') {
      throw new DispatchRefusedError(
        'E_EXPERIMENT_NOT_RUNNABLE',
        `experiment ${experimentId} is ${exp.queueStatus}; a run starts only from idle or manual_terminated`,
      );
    }
    await client.query(
      'UPDATE run_cases SET is_latest = FALSE, updated_at = now() WHERE experiment_id = $1 AND is_latest = TRUE',
      [experimentId],
    );
    const { rows } = await client.query<{ id: number }>(
      `INSERT INTO run_cases (experiment_id, data_item_id, agent_id, attempt_no, is_latest, status)
       SELECT $1, di.id, $3,
              COALESCE((SELECT max(rc.attempt_no) FROM run_cases rc WHERE rc.experiment_id = $1 AND rc.data_item_id = di.id), 0) + 1,
              TRUE, 'pending'
         FROM data_items di
        WHERE di.dataset_id = $2 AND di.is_deleted = FALSE AND di.deleted_at IS NULL
        ORDER BY di.id
       RETURNING id`,
      [experimentId, exp.datasetId, exp.agentId],
    );
    if (rows.length === 0) {
      throw new DispatchRefusedError(
        'E_EXPERIMENT_NOT_RUNNABLE',
        `the dataset of experiment ${experimentId} has no items`,
      );
    }
    await client.query(
      `UPDATE experiments SET queue_status = 'queued', queued_at = now(), queue_message_id = NULL,
              started_at = NULL, finished_at = NULL, updated_by = $2, updated_at = now()
        WHERE id = $1`,
      [experimentId, triggeredBy],
    );
    return buildMessageFromRows(
      client,
      experimentId,
      rows.map((r) => r.id),
      triggeredBy,
    );
  });
}

/**
 * The platform's "retry failed" (`benchctl rerun --failed`, `POST /v1/experiments/{id}/retry-failed`):
 * each latest row whose status is exactly `failed` gets a new attempt, then the message for just
 * those. Refused while a run of the experiment is queued or consuming, and when nothing failed.
 */
export async function dispatchRetryFailed(
  db: Database,
  experimentId: number,
  triggeredBy: string,
): Promise<{ message: ExperimentRunRequested; superseded: SupersededCase[] }> {
  return withTransaction(db, async (client) => {
    const exp = await lockLiveExperiment(client, experimentId);
    if (exp.queueStatus === 'queued' || exp.queueStatus === 'consuming') {
      throw new DispatchRefusedError(
        'E_EXPERIMENT_BUSY',
        `experiment ${experimentId} is ${exp.queueStatus}: wait for its run to end`,
      );
    }
    const superseded = await supersedeFailedCases(client, experimentId);
    if (superseded.length === 0) {
      throw new DispatchRefusedError('E_NO_FAILED_CASES', `experiment ${experimentId} has no failed cases`);
    }
    const message = await buildMessageFromRows(
      client,
      experimentId,
      superseded.map((s) => s.newRunCaseId),
      triggeredBy,
    );
    return { message, superseded };
  });
}
