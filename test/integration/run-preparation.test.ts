import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';
import { createRunActivities } from '../../activities/run-activities';
import { caseSpecDefaults, loadConfig } from '../../src/config';
import { RunRequestCache } from '../../src/db/run-request-cache';
import { CASE_STATUSES, PROGRESS_GUARDS } from '../../src/domain/case-status';
import type { ExperimentRunResult } from '../../src/domain/experiment-run';
import { parseExperimentMessage } from '../../src/domain/message';
import { getCaseStatuses } from '../../src/db/run-case-repository';
import { queueRunCases } from '../../src/db/run-control-repository';
import { createLogger } from '../../src/logger';
import { startExperimentRun } from '../../src/temporal/run-starter';
import { createTestDatabase, seedExperiment, setCaseStatuses, type TestDatabase } from '../support/database';
import { buildPlatformMessage, storeRunRequest } from '../support/platform';
import { localTestEnv, managedContainers, startStack, type Stack } from '../support/stack';

const log = createLogger({ level: 'silent' });
/** The SDK logs every failed attempt; failing attempts are what the pull test is about. */
const QUIET = { logger: new DefaultLogger('ERROR') };

async function experimentRow(pool: TestDatabase['pool'], experimentId: number) {
  const { rows } = await pool.query<{ queue_status: string; started: boolean; finished: boolean }>(
    `SELECT queue_status, started_at IS NOT NULL AS started, finished_at IS NOT NULL AS finished
       FROM experiments WHERE id = $1`,
    [experimentId],
  );
  return rows[0];
}

describe('run preparation against Postgres', () => {
  let db: TestDatabase;
  before(async () => {
    db = await createTestDatabase();
  });
  after(async () => {
    await db?.drop();
  });

  describe('queueRunCases: the whole run queued in one statement', () => {
    for (const queueStatus of ['queued', 'manual_terminated']) {
      test(`moves the run's cases from ${PROGRESS_GUARDS.queued.join(', ')} only, and refreshes the experiment (experiment ${queueStatus})`, async () => {
        // One case per status.
        const seeded = await seedExperiment(db.pool, { cases: CASE_STATUSES.length, queueStatus });
        await Promise.all(
          CASE_STATUSES.map((s, i) => setCaseStatuses(db.pool, [seeded.runCaseIds[i] as number], s)),
        );
        const workflowId = await storeRunRequest(db.pool, seeded);

        const changed = await queueRunCases(db.pool, { workflowId, experimentId: seeded.experimentId });

        const movable = (s: string) => (PROGRESS_GUARDS.queued as readonly string[]).includes(s);
        assert.equal(changed, CASE_STATUSES.filter(movable).length);
        const statuses = await getCaseStatuses(db.pool, seeded.experimentId);
        for (const [i, before] of CASE_STATUSES.entries()) {
          assert.equal(
            statuses.get(seeded.runCaseIds[i] as number),
            movable(before) ? 'queued' : before,
            `${before} → queued`,
          );
        }
        // §3.4: active cases make the run 'consuming'; a manual_terminated experiment is never refreshed.
        assert.deepEqual(
          await experimentRow(db.pool, seeded.experimentId),
          queueStatus === 'manual_terminated'
            ? { queue_status: 'manual_terminated', started: false, finished: false }
            : { queue_status: 'consuming', started: true, finished: false },
        );
      });
    }

    test("touches only the run's cases of its own experiment", async () => {
      const seeded = await seedExperiment(db.pool, { cases: 3 });
      const other = await seedExperiment(db.pool, { cases: 1 });
      const [a, b, notInRun] = seeded.runCaseIds as [number, number, number];
      const workflowId = await storeRunRequest(
        db.pool,
        { ...seeded, runCaseIds: [a, b], dataItemIds: seeded.dataItemIds.slice(0, 2) },
        undefined,
        other.runCaseIds,
      );

      assert.equal(await queueRunCases(db.pool, { workflowId, experimentId: seeded.experimentId }), 2);

      const statuses = await getCaseStatuses(db.pool, seeded.experimentId);
      assert.deepEqual(
        [statuses.get(a), statuses.get(b), statuses.get(notInRun)],
        ['queued', 'queued', 'pending'],
      );
      assert.equal(
        (await getCaseStatuses(db.pool, other.experimentId)).get(other.runCaseIds[0] as number),
        'pending',
      );
    });
  });

  describe('prepareRun', () => {
    const pulled: string[] = [];
    const activities = () =>
      createRunActivities({
        pool: db.pool,
        log,
        runRequests: new RunRequestCache(db.pool, caseSpecDefaults(loadConfig(localTestEnv())), undefined),
        images: {
          ensureImage: async (image: string) => {
            pulled.push(image);
          },
        },
        pullAttempts: 3,
      });

    test('with firstPageLimit returns the page listCasePage(afterPosition 0) would, after queueing every case', async () => {
      const seeded = await seedExperiment(db.pool, { cases: 5 });
      const workflowId = await storeRunRequest(db.pool, seeded);
      const { prepareRun, listCasePage } = activities();
      const ref = { workflowId, experimentId: seeded.experimentId, messageId: 'unused' };

      const prep = await prepareRun({ ...ref, firstPageLimit: 3 });

      assert.deepEqual(prep, { firstPage: await listCasePage({ workflowId, afterPosition: 0, limit: 3 }) });
      assert.deepEqual(
        prep.firstPage?.map((c) => c.runCaseId),
        seeded.runCaseIds.slice(0, 3),
      );
      assert.deepEqual(
        prep.firstPage?.map((c) => c.position),
        [1, 2, 3],
      );
      const statuses = await getCaseStatuses(db.pool, seeded.experimentId);
      assert.deepEqual(
        [...statuses.values()],
        Array(5).fill('queued'),
        'every case of the run, not only the first page',
      );
      assert.equal(pulled.at(-1), 'bench/busybox:latest');
    });

    test('without firstPageLimit returns no page (workflows started before the marker)', async () => {
      const seeded = await seedExperiment(db.pool, { cases: 2 });
      const workflowId = await storeRunRequest(db.pool, seeded);
      const prep = await activities().prepareRun({
        workflowId,
        experimentId: seeded.experimentId,
        messageId: 'unused',
      });
      assert.deepEqual(prep, {});
      const statuses = await getCaseStatuses(db.pool, seeded.experimentId);
      assert.deepEqual([...statuses.values()], ['queued', 'queued']);
    });

    test('a run that cannot start returns its failure and no page', async () => {
      const seeded = await seedExperiment(db.pool, { cases: 2 });
      const workflowId = await storeRunRequest(db.pool, seeded, { case_exec_command: 'true' });
      const prep = await activities().prepareRun({
        workflowId,
        experimentId: seeded.experimentId,
        messageId: 'unused',
        firstPageLimit: 200,
      });
      assert.equal(prep.firstPage, undefined);
      assert.equal(prep.failedCases, 2);
      assert.ok(prep.failure);
    });

    test('an image pull that fails is retried by Temporal; at the last attempt (CONSUMER_MAX_RETRIES) every case fails with its reason', async () => {
      const seeded = await seedExperiment(db.pool, { cases: 2 });
      const workflowId = await storeRunRequest(db.pool, seeded);
      const { prepareRun } = createRunActivities({
        pool: db.pool,
        log,
        runRequests: new RunRequestCache(db.pool, caseSpecDefaults(loadConfig(localTestEnv())), undefined),
        images: {
          ensureImage: async () => {
            throw new Error('registry unreachable');
          },
        },
        pullAttempts: 3,
      });
      const input = {
        workflowId,
        experimentId: seeded.experimentId,
        messageId: 'unused',
        firstPageLimit: 200,
      };

      for (const attempt of [1, 2]) {
        await assert.rejects(
          new MockActivityEnvironment({ attempt }, QUIET).run(prepareRun, input),
          /registry unreachable/,
          `attempt ${attempt} throws: Temporal retries it`,
        );
      }
      const last = await new MockActivityEnvironment({ attempt: 3 }, QUIET).run(prepareRun, input);

      assert.deepEqual(last, { failure: 'registry unreachable', failedCases: 2 });
      const statuses = await getCaseStatuses(db.pool, seeded.experimentId);
      assert.deepEqual([...statuses.values()], ['failed', 'failed']);
    });

    test("a spec the sandbox could not run (memory below Docker's floor) fails the run at start, not case by case", async () => {
      const seeded = await seedExperiment(db.pool, { cases: 2 });
      const workflowId = await storeRunRequest(db.pool, seeded, {
        agent_image: 'bench/busybox:latest',
        case_exec_command: 'true',
        memory_mb: 4,
      });
      const before = pulled.length;
      const prep = await activities().prepareRun({
        workflowId,
        experimentId: seeded.experimentId,
        messageId: 'unused',
      });
      assert.equal(prep.failedCases, 2);
      assert.match(
        prep.failure ?? '',
        /^E_SANDBOX_RUNTIME_SPEC_INVALID: agent\.runtime_spec_json\.memory_mb/,
      );
      assert.equal(pulled.length, before, 'no image pulled for a run that cannot start');
    });
  });
});

/**
 * A fresh run through Temporal: its first case starts straight after prepareRun, which returned the
 * first page; no listCasePage activity in between (one activity and workflow task less at start).
 */
describe('a fresh run starts its first case without a listCasePage activity', () => {
  let stack: Stack;
  const workflowIds: string[] = [];
  before(async () => {
    stack = await startStack({ log, env: { CONSUMER_CONCURRENT_CASES: '2' } });
  });
  after(async () => {
    if (stack)
      assert.deepEqual(
        await managedContainers(stack.docker, workflowIds),
        [],
        'no container of ours is left',
      );
    await stack?.stop();
  });

  test('history: prepareRun, then case-<id>/run of the first case, no listCasePage before it', async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: 3 });
    const parsed = parseExperimentMessage(
      JSON.stringify(
        buildPlatformMessage(seeded, {
          queue: 'direct',
          runtimeSpec: {
            agent_image: 'bench/busybox:latest',
            sandbox_start_command: 'sleep 3600',
            case_exec_command: `echo '{"output":"ok"}'`,
          },
        }),
      ),
    );
    assert.ok(parsed.ok);
    const { workflowId } = await startExperimentRun(
      { client: stack.client, pool: stack.db.pool, config: stack.config, log },
      parsed.message,
      parsed.message.message_id,
    );
    workflowIds.push(workflowId);
    const handle = stack.client.workflow.getHandle(workflowId);
    const result = (await handle.result()) as ExperimentRunResult;
    assert.equal(result.outcome, 'completed');
    assert.equal(result.progress.success, 3);

    const scheduled = ((await handle.fetchHistory()).events ?? []).flatMap((e) => {
      const a = e.activityTaskScheduledEventAttributes;
      return a ? [{ type: a.activityType?.name ?? '', id: a.activityId ?? '' }] : [];
    });
    const firstCase = scheduled.findIndex((a) => a.id === `case-${seeded.runCaseIds[0]}/run`);
    assert.ok(firstCase > 0, `the first case's container phase is scheduled: ${JSON.stringify(scheduled)}`);
    assert.deepEqual(
      scheduled.slice(0, firstCase).map((a) => a.type),
      ['prepareRun'],
      'only prepareRun runs before the first case',
    );
    assert.ok(!scheduled.slice(0, firstCase).some((a) => a.type === 'listCasePage'));
  });
});
