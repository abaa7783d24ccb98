import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';

const MIGRATIONS_DIR = path.join(__dirname, 'migrations');

/**
 * Arbitrary but fixed key for pg_advisory_lock. Advisory locks are per database, so workers sharing
 * one database queue behind each other while test databases on the same server do not.
 */
const MIGRATION_LOCK_KEY = 7_245_019_383;

/**
 * Applies every not-yet-applied .sql file of migrations/ in name order, each in its own transaction
 * together with its row in agentbench_schema_migrations. Returns the names applied by this call.
 */
export async function migrate(pool: pg.Pool): Promise<string[]> {
  const files = (await readdir(MIGRATIONS_DIR)).filter((f) => f.endsWith('.sql')).sort();
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    const applied = await applyPending(client, files);
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
    client.release();
    return applied;
  } catch (err) {
    // Destroying the connection also frees the session-level advisory lock.
    client.release(err as Error);
    throw err;
  }
}

async function applyPending(client: pg.PoolClient, files: string[]): Promise<string[]> {
  // Created under the lock: two concurrent CREATE TABLE IF NOT EXISTS can still collide.
  await client.query(
    `CREATE TABLE IF NOT EXISTS agentbench_schema_migrations (
       name TEXT PRIMARY KEY,
       applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
     )`,
  );
  const { rows } = await client.query<{ name: string }>('SELECT name FROM agentbench_schema_migrations');
  const done = new Set(rows.map((r) => r.name));
  const applied: string[] = [];
  for (const name of files) {
    if (done.has(name)) continue;
    const sql = await readFile(path.join(MIGRATIONS_DIR, name), 'utf8');
    await client.query('BEGIN');
    try {
      await client.query(sql);
      await client.query('INSERT INTO agentbench_schema_migrations (name) VALUES ($1)', [name]);
      await client.query('COMMIT');
    } catch (err) {
      // A failed ROLLBACK means a dead connection, which migrate() destroys; report the cause.
      await client.query('ROLLBACK').catch(() => undefined);
      throw new Error(`migration ${name} failed: ${(err as Error).message}`, { cause: err });
    }
    applied.push(name);
  }
  return applied;
}
