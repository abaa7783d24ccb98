import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createTestDatabase, type TestDatabase } from '../support/database';

describe('createPool', () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase({ migrate: false });
  });
  after(async () => {
    await db.drop();
  });

  test('returns BIGINT as a JS number', async () => {
    const { rows } = await db.pool.query<{ v: unknown; n: unknown }>(
      `SELECT 9007199254740991::bigint AS v, count(*) AS n FROM generate_series(1, 3)`,
    );
    assert.deepEqual(rows[0], { v: Number.MAX_SAFE_INTEGER, n: 3 });
  });

  test('fails the query instead of losing precision beyond MAX_SAFE_INTEGER, and the pool stays usable', async () => {
    await assert.rejects(db.pool.query('SELECT 9007199254740993::bigint AS v'), /MAX_SAFE_INTEGER/);
    const { rows } = await db.pool.query<{ ok: number }>('SELECT 1 AS ok');
    assert.equal(rows[0]?.ok, 1);
  });

  test('identifies itself as agentbench-orchestrator', async () => {
    const { rows } = await db.pool.query<{ name: string }>(
      `SELECT current_setting('application_name') AS name`,
    );
    assert.equal(rows[0]?.name, 'agentbench-orchestrator');
  });

  test('survives an idle client being killed by the server', { timeout: 10_000 }, async () => {
    const victim = await db.pool.connect();
    const killer = await db.pool.connect();
    try {
      const { rows } = await victim.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      victim.release();
      const errored = new Promise<void>((resolve) => db.pool.once('error', () => resolve()));
      await killer.query('SELECT pg_terminate_backend($1)', [rows[0]?.pid]);
      await errored;
    } finally {
      killer.release();
    }
    const { rows } = await db.pool.query<{ ok: number }>('SELECT 1 AS ok');
    assert.equal(rows[0]?.ok, 1);
  });
});
