import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { FileCaseResultSpool, type SpooledRecord } from '../../activities/case-result-spool';
import { sweepCaseResultSpool } from '../../activities/case-result-spool-sweep';
import { loadCasePhases, saveCaseResult, type CaseRawResult } from '../../src/db/case-result-repository';
import { createLogger } from '../../src/logger';
import { createTestDatabase, seedExperiment, type TestDatabase } from '../support/database';
import { storeRunRequest } from '../support/platform';
import { freePort } from '../support/ports';

/**
 * The spool sweep (issue 13: spool files of a dead worker, or of a case retried on another host,
 * were never cleaned) against the real Postgres: old entries of this deployment are stored, then
 * removed; another deployment's entries on the same host, young entries, and entries Postgres
 * cannot take right now are kept.
 */

const log = createLogger({ level: 'silent' });
const noneLive = { has: () => false };

function record(output: string, attempt: number): SpooledRecord {
  const now = new Date().toISOString();
  const raw: CaseRawResult = {
    status: 'success',
    errorMessage: null,
    exitCode: 0,
    agentOutput: output,
    logs: 'agent logs',
    stdoutTrajectory: null,
    agentUsage: null,
    timings: { sandboxConnectMs: 1, caseExecMs: 2, totalMs: 3 },
    startedAt: now,
    finishedAt: now,
    image: 'bench/busybox:latest',
    containerName: null,
    attempt,
  };
  return { raw, complete: true };
}

async function ageAll(dir: string, ageMs: number): Promise<void> {
  const when = new Date(Date.now() - ageMs);
  for (const name of await readdir(dir)) await utimes(path.join(dir, name), when, when);
}

describe('case result spool sweep (real Postgres)', () => {
  let db: TestDatabase;
  let root: string;
  before(async () => {
    db = await createTestDatabase();
    root = await mkdtemp(path.join(tmpdir(), 'spool-sweep-test-'));
  });
  after(async () => {
    await db?.drop();
    if (root) await rm(root, { recursive: true, force: true });
  });

  test("old entries are stored then removed; a stored record wins; another deployment's and young entries are kept", async () => {
    const seeded = await seedExperiment(db.pool, { cases: 3 });
    const workflowId = await storeRunRequest(db.pool, seeded);
    const [lost, alreadyStored, young] = seeded.runCaseIds as [number, number, number];
    const ours = new FileCaseResultSpool(root, 'deployment-a');
    const theirs = new FileCaseResultSpool(root, 'deployment-b');
    // A dead worker's record nobody came back for; one whose retry (elsewhere) stored its own.
    await ours.write(workflowId, lost, record('spooled output', 1));
    await ours.write(workflowId, alreadyStored, record('spooled output', 1));
    await saveCaseResult(db.pool, workflowId, alreadyStored, record('output of the retry', 2).raw);
    // A record of another deployment sharing this host, for the same ids.
    await theirs.write(workflowId, lost, record('the other deployment', 1));
    // A cut write (never renamed).
    await writeFile(path.join(root, 'deployment-a', 'cut.json.123.tmp'), '{"half');
    await ageAll(path.join(root, 'deployment-a'), 3_600_000);
    await ageAll(path.join(root, 'deployment-b'), 3_600_000);
    await ours.write(workflowId, young, record('young', 1));

    const swept = await sweepCaseResultSpool({
      spool: ours,
      pool: db.pool,
      log,
      minAgeMs: 600_000,
      liveAttempts: noneLive,
    });

    assert.deepEqual(swept, { stored: 2, kept: 0 });
    assert.equal((await loadCasePhases(db.pool, workflowId, lost))?.result.agentOutput, 'spooled output');
    assert.equal(
      (await loadCasePhases(db.pool, workflowId, alreadyStored))?.result.agentOutput,
      'output of the retry',
      'first write wins',
    );
    assert.equal(await ours.read(workflowId, lost), null);
    assert.equal(await ours.read(workflowId, alreadyStored), null);
    assert.equal((await ours.read(workflowId, young))?.raw.agentOutput, 'young', 'young entry kept');
    assert.equal(await loadCasePhases(db.pool, workflowId, young), null);
    assert.equal(
      (await theirs.read(workflowId, lost))?.raw.agentOutput,
      'the other deployment',
      "another deployment's entry untouched",
    );
    assert.deepEqual(
      (await readdir(path.join(root, 'deployment-a'))).filter((n) => n.endsWith('.tmp')),
      [],
      'the cut write is gone',
    );
  });

  test('with Postgres unreachable nothing is removed', async () => {
    const seeded = await seedExperiment(db.pool, { cases: 1 });
    const workflowId = await storeRunRequest(db.pool, seeded);
    const runCaseId = seeded.runCaseIds[0] as number;
    const spool = new FileCaseResultSpool(root, 'deployment-c');
    await spool.write(workflowId, runCaseId, record('kept through the outage', 1));
    await ageAll(path.join(root, 'deployment-c'), 3_600_000);
    // Nothing listens on this port: every query fails with ECONNREFUSED.
    const away = new pg.Pool({ host: '127.0.0.1', port: await freePort(), connectionTimeoutMillis: 2_000 });
    try {
      const swept = await sweepCaseResultSpool({
        spool,
        pool: away,
        log,
        minAgeMs: 0,
        liveAttempts: noneLive,
      });
      assert.deepEqual(swept, { stored: 0, kept: 1 });
    } finally {
      await away.end();
    }
    assert.equal((await spool.read(workflowId, runCaseId))?.raw.agentOutput, 'kept through the outage');

    const swept = await sweepCaseResultSpool({
      spool,
      pool: db.pool,
      log,
      minAgeMs: 0,
      liveAttempts: noneLive,
    });
    assert.deepEqual(swept, { stored: 1, kept: 0 });
    assert.equal(
      (await loadCasePhases(db.pool, workflowId, runCaseId))?.result.agentOutput,
      'kept through the outage',
    );
  });

  test('an attempt still running here keeps its entry; a record cut before its after command is never a success', async () => {
    const seeded = await seedExperiment(db.pool, { cases: 2 });
    const workflowId = await storeRunRequest(db.pool, seeded);
    const [running, cut] = seeded.runCaseIds as [number, number];
    const spool = new FileCaseResultSpool(root, 'deployment-d');
    await spool.write(workflowId, running, { ...record('its after command still runs', 1), complete: false });
    await spool.write(workflowId, cut, { ...record('cut before the after command', 1), complete: false });
    await ageAll(path.join(root, 'deployment-d'), 3_600_000);

    const swept = await sweepCaseResultSpool({
      spool,
      pool: db.pool,
      log,
      minAgeMs: 0,
      liveAttempts: { has: (w, id) => w === workflowId && id === running },
    });

    assert.deepEqual(swept, { stored: 1, kept: 0 });
    assert.equal(await loadCasePhases(db.pool, workflowId, running), null, 'the live attempt stores its own');
    assert.equal((await spool.read(workflowId, running))?.raw.agentOutput, 'its after command still runs');
    const stored = (await loadCasePhases(db.pool, workflowId, cut))?.result;
    assert.equal(stored?.status, 'failed');
    assert.match(stored?.errorMessage ?? '', /^E_AFTER_EXEC_NOT_RUN: /);
    assert.equal(stored?.agentOutput, 'cut before the after command');
  });
});
