import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createTestDatabase, type TestDatabase } from '../support/database';
import type { CaseRawResult, CaseTrajectory } from '../../src/db/case-result-repository';
import {
  purgeExpiredResults,
  storeCachedResult,
  takeCachedResult,
} from '../../src/db/result-cache-repository';

const RESULT = { status: 'success', agentOutput: { success: true }, logs: 'ok' } as unknown as CaseRawResult;
const TRAJECTORY: CaseTrajectory = { steps: [{ step: 1 }], source: 'spans', otelUsage: null, queryMs: 3 };
const entry = (key: string, ttlSeconds: number, runCaseId = 1) => ({
  cacheKey: key,
  taskType: 'code',
  imageId: 'sha256:abc',
  result: RESULT,
  trajectory: TRAJECTORY,
  workflowId: 'wf-1',
  runCaseId,
  ttlSeconds,
});

describe('agentbench_result_cache', () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase();
  });
  after(async () => {
    await db.drop();
  });

  test('given a stored entry, then a lookup returns it and counts the hit; a retried store keeps the count', async () => {
    await storeCachedResult(db.pool, entry('k1', 3600));
    const hit = await takeCachedResult(db.pool, 'k1');
    assert.deepEqual(hit?.result, RESULT);
    assert.deepEqual(hit?.trajectory, TRAJECTORY);
    assert.equal(hit?.sourceRunCaseId, 1);
    await storeCachedResult(db.pool, entry('k1', 3600));
    const { rows } = await db.pool.query<{ hits: number }>(
      "SELECT hits FROM agentbench_result_cache WHERE cache_key = 'k1'",
    );
    assert.equal(Number(rows[0]?.hits), 1);
    assert.equal(await takeCachedResult(db.pool, 'missing'), null);
  });

  test('given an expired entry, then a miss, and purge removes it; a newer result replaces it', async () => {
    await storeCachedResult(db.pool, entry('k2', 3600));
    await db.pool.query(
      "UPDATE agentbench_result_cache SET expires_at = now() - interval '1 second' WHERE cache_key = 'k2'",
    );
    assert.equal(await takeCachedResult(db.pool, 'k2'), null);
    await storeCachedResult(db.pool, entry('k2', 3600, 2));
    assert.equal((await takeCachedResult(db.pool, 'k2'))?.sourceRunCaseId, 2);
    await db.pool.query(
      "UPDATE agentbench_result_cache SET expires_at = now() - interval '1 second' WHERE cache_key = 'k2'",
    );
    assert.equal(await purgeExpiredResults(db.pool), 1);
  });
});
