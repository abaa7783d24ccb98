import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { migrate } from '../../src/db/migrate';
import { createPool } from '../../src/db/pool';
import { createLogger } from '../../src/logger';

const DEFAULT_ADMIN_URL = 'postgres://agentbench:agentbench@127.0.0.1:5432/agentbench';

export interface TestDatabase {
  url: string;
  pool: pg.Pool;
  drop(): Promise<void>;
}

const adminUrlOf = (adminUrl?: string) =>
  adminUrl ?? process.env.TEST_DATABASE_ADMIN_URL ?? DEFAULT_ADMIN_URL;

async function withAdmin<T>(fn: (admin: pg.Client) => Promise<T>, adminUrl?: string): Promise<T> {
  const admin = new pg.Client({ connectionString: adminUrlOf(adminUrl) });
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.end();
  }
}

/**
 * A fresh database `agentbench_t_<random>` on the local server (or the one `adminUrl` names, e.g. a
 * private server of a fault test), migrated unless `migrate: false` (for tests of the migrations
 * themselves); drop() ends the pool and removes the database.
 */
export async function createTestDatabase(
  opts: { migrate?: boolean; adminUrl?: string } = {},
): Promise<TestDatabase> {
  const name = `agentbench_t_${randomBytes(6).toString('hex')}`;
  const { adminUrl } = opts;
  await withAdmin((admin) => admin.query(`CREATE DATABASE ${name}`), adminUrl);
  const url = new URL(adminUrlOf(adminUrl));
  url.pathname = `/${name}`;
  const pool = createPool(url.toString(), 10, createLogger({ level: 'silent' }));
  try {
    if (opts.migrate !== false) {
      await migrate(pool);
      await offsetIdentities(pool);
    }
  } catch (err) {
    await pool.end();
    await withAdmin((admin) => admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`), adminUrl);
    throw err;
  }
  return {
    url: url.toString(),
    pool,
    async drop() {
      await pool.end();
      await withAdmin((admin) => admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`), adminUrl);
    },
  };
}

/**
 * Every test database shares one Temporal server, where runs are found by experiment id: start
 * each database's identity columns at its own random offset so ids never collide across databases.
 */
async function offsetIdentities(pool: pg.Pool): Promise<void> {
  const base = 1_000_000 + randomBytes(4).readUInt32BE(0) * 1000;
  const { rows } = await pool.query<{ seq: string }>(
    `SELECT pg_get_serial_sequence(quote_ident(table_name), column_name) AS seq
       FROM information_schema.columns
      WHERE table_schema = 'public' AND is_identity = 'YES'`,
  );
  for (const { seq } of rows) await pool.query('SELECT setval($1::regclass, $2)', [seq, base]);
}

export interface SeededExperiment {
  experimentId: number;
  datasetId: number;
  agentId: number;
  dataItemIds: number[];
  runCaseIds: number[];
  evaluatorIds: number[];
}

/**
 * Platform-shaped rows as the platform's runExperiment leaves them: experiment queued (queued_at
 * set), one pending attempt-1 latest run case per data item, evaluators linked to the experiment.
 */
export async function seedExperiment(
  pool: pg.Pool,
  opts: { cases: number; runtimeSpec?: object; queueStatus?: string; evaluators?: number },
): Promise<SeededExperiment> {
  const tag = randomBytes(4).toString('hex');
  const one = async (sql: string, params: unknown[]): Promise<number> => {
    const { rows } = await pool.query<{ id: number }>(sql, params);
    const row = rows[0];
    if (!row) throw new Error(`seed insert returned no row: ${sql}`);
    return row.id;
  };
  // Identity values follow insert order, so sorted lists line up: runCaseIds[i] is for dataItemIds[i].
  const many = async (sql: string, params: unknown[]): Promise<number[]> =>
    (await pool.query<{ id: number }>(sql, params)).rows.map((r) => r.id).sort((a, b) => a - b);

  const agentId = await one(
    `INSERT INTO agents (agent_key, version, name, runtime_spec_json) VALUES ($1, 'v1', 'Test Agent', $2::jsonb) RETURNING id`,
    [
      `agent-${tag}`,
      JSON.stringify(opts.runtimeSpec ?? { agent_image: 'alpine:3', case_exec_command: 'true' }),
    ],
  );
  const datasetId = await one(`INSERT INTO datasets (name) VALUES ($1) RETURNING id`, [`dataset-${tag}`]);
  const dataItemIds = await many(
    `INSERT INTO data_items (dataset_id, session_jsonl, user_input, reference_output)
     SELECT $1, '[]', 'question ' || n, jsonb_build_object('answer', n)
       FROM generate_series(1, $2::int) AS n
     ORDER BY n
     RETURNING id`,
    [datasetId, opts.cases],
  );
  const evaluatorIds = await many(
    `INSERT INTO evaluators (evaluator_key, name, prompt_template)
     SELECT $1 || '-' || n, 'Judge ' || n, 'Input: {{data_item.input}}' FROM generate_series(1, $2::int) AS n
     ORDER BY n
     RETURNING id`,
    [`judge-${tag}`, opts.evaluators ?? 1],
  );
  const experimentId = await one(
    `INSERT INTO experiments (name, dataset_id, agent_id, queue_status, queued_at)
     VALUES ($1, $2, $3, $4, now()) RETURNING id`,
    [`experiment-${tag}`, datasetId, agentId, opts.queueStatus ?? 'queued'],
  );
  await pool.query(
    `INSERT INTO experiment_evaluators (experiment_id, evaluator_id) SELECT $1, unnest($2::bigint[])`,
    [experimentId, evaluatorIds],
  );
  const runCaseIds = await many(
    `INSERT INTO run_cases (experiment_id, data_item_id, agent_id, attempt_no, is_latest, status)
     SELECT $1, item, $2, 1, TRUE, 'pending' FROM unnest($3::bigint[]) WITH ORDINALITY AS t(item, n)
     ORDER BY n
     RETURNING id`,
    [experimentId, agentId, dataItemIds],
  );
  return { experimentId, datasetId, agentId, dataItemIds, runCaseIds, evaluatorIds };
}

/** Puts run cases into a status directly, bypassing every guard (test set-up only). */
export async function setCaseStatuses(pool: pg.Pool, runCaseIds: number[], status: string): Promise<void> {
  await pool.query('UPDATE run_cases SET status = $2 WHERE id = ANY($1::bigint[])', [runCaseIds, status]);
}
