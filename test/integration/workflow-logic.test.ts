import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Context } from '@temporalio/activity';
import { WorkflowFailedError, type WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import { CancelledFailure } from '@temporalio/common';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, Runtime, Worker } from '@temporalio/worker';
import { activity, caseActivity } from '../../activities/activity-boundary';
import type {
  Activities,
  CaseCursorEntry,
  CaseExecutionSummary,
  CaseFinalSummary,
} from '../../src/domain/activity-contract';
import { workflowIdForRun, type ExperimentRunInput, type RunSettings } from '../../src/domain/experiment-run';
import { SA } from '../../src/domain/search-attributes';
import { SandboxSpecError } from '../../src/docker/errors';
import { createLogger } from '../../src/logger';
import { findTemporalBinary } from '../../src/temporal/dev-server';
import { installTemporalLogging } from '../../src/temporal/runtime-logging';
import { WORKFLOWS_PATH } from '../../src/temporal/workflows-path';
import type { experimentRunWorkflow } from '../../workflows/experiment-run';
import { progressQuery } from '../../workflows/experiment-run';

/**
 * The branches of experimentRunWorkflow that otherwise only an end-to-end run reaches, in seconds:
 * the real workflow code on an ephemeral Temporal dev server (the `temporal` binary scripts/setup
 * installs, its own in-memory database), its activities replaced by small recording fakes. What
 * the activities themselves do is tested against the real services elsewhere
 * (case-activities.test.ts, run-preparation.test.ts, the e2e suite).
 */

// Retried activities and cancellations are expected here: keep the SDK's warnings out of the output.
installTemporalLogging(createLogger({ level: 'silent' }), 'ERROR');

const SETTINGS: RunSettings = {
  concurrentCases: 2,
  caseMaxAttempts: 3,
  caseActivityTimeoutSeconds: 60,
  // Off unless a test is about it: the watcher's timer is cancelled when the run ends.
  terminationCheckSeconds: 3600,
  maxHistoryEvents: 100_000,
  scorerConcurrentCases: 2,
  scorerHardTimeoutSeconds: 10,
};

type ActivityName = keyof Activities;

interface Call {
  activity: ActivityName;
  input: unknown;
  attempt: number;
}

/** What the fakes record of one run: every activity call in order, with its attempt. */
class Recorder {
  readonly calls: Call[] = [];

  record<I, R>(name: ActivityName, fn: (input: I) => Promise<R>): (input: I) => Promise<R> {
    return async (input) => {
      this.calls.push({ activity: name, input, attempt: Context.current().info.attempt });
      return fn(input);
    };
  }

  names(): ActivityName[] {
    return this.calls.map((c) => c.activity);
  }

  of(name: ActivityName): Call[] {
    return this.calls.filter((c) => c.activity === name);
  }

  /** The activities one case went through, in order. */
  phasesOf(runCaseId: number): ActivityName[] {
    return this.calls.filter((c) => runCaseIdOf(c.input) === runCaseId).map((c) => c.activity);
  }
}

const workflowIdOf = (input: ExperimentRunInput) => workflowIdForRun(input.experimentId, input.messageId);

function runCaseIdOf(input: unknown): number | undefined {
  if (typeof input !== 'object' || input === null || !('runCaseId' in input)) return undefined;
  return typeof input.runCaseId === 'number' ? input.runCaseId : undefined;
}

const success: CaseExecutionSummary = {
  status: 'success',
  errorMessage: null,
  exitCode: 0,
  needsJudge: true,
};

/**
 * A run of `count` cases (run case ids 1001…) whose activities all succeed unless overridden;
 * pages hold at most `pageSize` cases.
 */
function fakeRun(count: number, overrides: Partial<Activities> = {}, pageSize = 200) {
  const cases: CaseCursorEntry[] = Array.from({ length: count }, (_, i) => ({
    position: i + 1,
    runCaseId: 1001 + i,
  }));
  const page = (afterPosition: number, limit: number) =>
    cases.filter((c) => c.position > afterPosition).slice(0, Math.min(limit, pageSize));
  const impl: Activities = {
    prepareRun: async (p) => (p.firstPageLimit === undefined ? {} : { firstPage: page(0, p.firstPageLimit) }),
    listCasePage: async (p) => page(p.afterPosition, p.limit),
    checkRunState: async () => ({ stop: null }),
    cancelRun: async () => 0,
    executeCase: async () => success,
    collectTrajectory: async () => ({ source: 'none', steps: 0 }),
    scoreCase: async () => ({ scores: [] }),
    finalizeCase: async (p): Promise<CaseFinalSummary> =>
      p.notExecutedError === null
        ? { status: 'success', errorMessage: null, persisted: true }
        : { status: 'failed', errorMessage: p.notExecutedError, persisted: true },
    ...overrides,
  };
  const recorder = new Recorder();
  const activities: Activities = {
    prepareRun: recorder.record('prepareRun', impl.prepareRun),
    listCasePage: recorder.record('listCasePage', impl.listCasePage),
    checkRunState: recorder.record('checkRunState', impl.checkRunState),
    cancelRun: recorder.record('cancelRun', impl.cancelRun),
    executeCase: recorder.record('executeCase', impl.executeCase),
    collectTrajectory: recorder.record('collectTrajectory', impl.collectTrajectory),
    scoreCase: recorder.record('scoreCase', impl.scoreCase),
    finalizeCase: recorder.record('finalizeCase', impl.finalizeCase),
  };
  const ids = cases.map((c) => c.runCaseId);
  return { activities, recorder, ids };
}

/** A promise resolved when `arrive` has been called `count` times. */
function arrivals(count: number): { arrive: () => void; reached: Promise<void> } {
  let seen = 0;
  let resolve = () => {};
  const reached = new Promise<void>((r) => (resolve = r));
  return {
    arrive: () => {
      if (++seen >= count) resolve();
    },
    reached,
  };
}

/** A container phase that runs until it is cancelled (as the real one, it learns so from a heartbeat). */
function blockedUntilCancelled(onStart: () => void, onCleanup: () => void) {
  return async (): Promise<CaseExecutionSummary> => {
    const ctx = Context.current();
    onStart();
    try {
      for (;;) {
        ctx.heartbeat();
        await ctx.sleep(100);
      }
    } finally {
      onCleanup();
    }
  };
}

/** Each run's fakes, by workflow id: one worker serves every test of the file. */
const fakesByWorkflow = new Map<string, Activities>();

function fakesOfThisRun(): Activities {
  const workflowId = Context.current().info.workflowExecution?.workflowId ?? '';
  const fakes = fakesByWorkflow.get(workflowId);
  if (!fakes) throw new Error(`no fakes registered for ${workflowId}`);
  return fakes;
}

const routedActivities: Activities = {
  prepareRun: (p) => fakesOfThisRun().prepareRun(p),
  listCasePage: (p) => fakesOfThisRun().listCasePage(p),
  checkRunState: (p) => fakesOfThisRun().checkRunState(p),
  cancelRun: (p) => fakesOfThisRun().cancelRun(p),
  executeCase: (p) => fakesOfThisRun().executeCase(p),
  collectTrajectory: (p) => fakesOfThisRun().collectTrajectory(p),
  scoreCase: (p) => fakesOfThisRun().scoreCase(p),
  finalizeCase: (p) => fakesOfThisRun().finalizeCase(p),
};

describe('experiment run workflow with mocked activities (ephemeral dev server)', () => {
  let env: TestWorkflowEnvironment;
  let worker: Worker;
  let running: Promise<void>;
  const taskQueue = `workflow-logic-${randomBytes(4).toString('hex')}`;

  before(async () => {
    const binary = findTemporalBinary();
    assert.ok(binary, 'the temporal binary (scripts/setup installs it)');
    const [testEnv, workflowBundle] = await Promise.all([
      TestWorkflowEnvironment.createLocal({
        server: {
          executable: { type: 'existing-path', path: binary },
          searchAttributes: Object.values(SA),
          log: { format: 'json', level: 'error' },
        },
      }),
      bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: Runtime.instance().logger }),
    ]);
    env = testEnv;
    worker = await Worker.create({
      connection: env.nativeConnection,
      taskQueue,
      workflowBundle,
      activities: routedActivities,
      // As case-worker.ts: every heartbeat goes out, so a cancellation reaches the activity at once.
      maxHeartbeatThrottleInterval: '100ms',
    });
    running = worker.run();
  });
  after(async () => {
    if (worker) {
      worker.shutdown();
      await running;
    }
    await env?.teardown();
  });

  function runInput(totalCases: number, settings: Partial<RunSettings> = {}): ExperimentRunInput {
    return {
      experimentId: 42,
      messageId: `msg-${randomBytes(4).toString('hex')}`,
      totalCases,
      settings: { ...SETTINGS, ...settings },
    };
  }

  /** `fn` with a `start` whose runs are served by `activities`. */
  async function withFakes<T>(
    activities: Activities,
    fn: (
      start: (
        input: ExperimentRunInput,
      ) => Promise<WorkflowHandleWithFirstExecutionRunId<typeof experimentRunWorkflow>>,
    ) => Promise<T>,
  ): Promise<T> {
    return fn((input) => {
      fakesByWorkflow.set(workflowIdOf(input), activities);
      return env.client.workflow.start<typeof experimentRunWorkflow>('experimentRunWorkflow', {
        taskQueue,
        workflowId: workflowIdOf(input),
        args: [input],
      });
    });
  }

  const execute = (activities: Activities, input: ExperimentRunInput) =>
    withFakes(activities, async (start) => (await start(input)).result());

  describe('before the first case', () => {
    for (const skip of ['skipped_manual_terminated', 'skipped_stale'] as const) {
      test(`${skip}: the run ends at prepareRun, no case activity runs`, async () => {
        const run = fakeRun(3, { prepareRun: async () => ({ skip, detail: `because ${skip}` }) });

        const result = await execute(run.activities, runInput(3));

        assert.equal(result.outcome, skip);
        assert.equal(result.detail, `because ${skip}`);
        assert.equal(result.progress.started, 0);
        assert.deepEqual(run.recorder.names(), ['prepareRun']);
      });
    }

    test('failed before start: every case counts as failed, the search attributes say so, no case activity runs', async () => {
      const run = fakeRun(3, {
        prepareRun: async () => ({ failure: 'E_IMAGE_PULL_FAILED: no such image', failedCases: 3 }),
      });

      const { result, attributes } = await withFakes(run.activities, async (start) => {
        const handle = await start(runInput(3));
        const r = await handle.result();
        return { result: r, attributes: (await handle.describe()).typedSearchAttributes };
      });

      assert.equal(result.outcome, 'failed_before_start');
      assert.equal(result.detail, 'E_IMAGE_PULL_FAILED: no such image');
      assert.equal(result.progress.failed, 3);
      assert.equal(result.progress.started, 0);
      assert.equal(attributes.get(SA.casesDone), 3);
      assert.equal(attributes.get(SA.casesFailed), 3);
      assert.deepEqual(run.recorder.names(), ['prepareRun']);
    });
  });

  describe('the phases of a case', () => {
    test('the first page comes with prepareRun; a case the container phase finished gets no further activity (fast path)', async () => {
      const run = fakeRun(3, {
        executeCase: async () => ({
          ...success,
          needsJudge: false,
          finalized: { status: 'success', errorMessage: null, persisted: true },
        }),
      });

      const input = runInput(3);
      const result = await execute(run.activities, input);

      assert.equal(result.outcome, 'completed');
      assert.deepEqual(result.progress, { ...result.progress, total: 3, started: 3, success: 3, failed: 0 });
      assert.deepEqual(
        run.recorder.of('prepareRun').map((c) => c.input),
        [
          {
            workflowId: workflowIdOf(input),
            experimentId: 42,
            messageId: input.messageId,
            firstPageLimit: 200,
          },
        ],
      );
      for (const id of run.ids) assert.deepEqual(run.recorder.phasesOf(id), ['executeCase'], `case ${id}`);
      // The workflow asks for the fast path; only the end of the list is read with listCasePage.
      for (const c of run.recorder.of('executeCase')) {
        assert.equal((c.input as { finishInline?: boolean }).finishInline, true);
      }
      assert.deepEqual(
        run.recorder.of('listCasePage').map((c) => (c.input as { afterPosition: number }).afterPosition),
        [3],
      );
    });

    test('trajectory, then score, then finalize; no score phase when no judge would be called; a case no longer active ends at once', async () => {
      const [judged, unjudged, gone] = [1001, 1002, 1003];
      const run = fakeRun(3, {
        executeCase: async (ref) =>
          ref.runCaseId === gone
            ? { status: 'not_active', errorMessage: null, exitCode: null }
            : { ...success, needsJudge: ref.runCaseId === judged },
      });

      const result = await execute(run.activities, runInput(3));

      assert.deepEqual(run.recorder.phasesOf(judged), [
        'executeCase',
        'collectTrajectory',
        'scoreCase',
        'finalizeCase',
      ]);
      assert.deepEqual(run.recorder.phasesOf(unjudged), ['executeCase', 'collectTrajectory', 'finalizeCase']);
      assert.deepEqual(run.recorder.phasesOf(gone), ['executeCase']);
      assert.equal(result.outcome, 'completed');
      assert.equal(result.progress.success, 2);
      assert.equal(result.progress.canceled, 1);
      assert.deepEqual(result.progress.recentFailures, [
        { runCaseId: gone, status: 'canceled', error: 'case no longer active' },
      ]);
    });

    test('at most concurrentCases container phases at once', async () => {
      let live = 0;
      let peak = 0;
      const bothSlotsTaken = arrivals(2);
      const run = fakeRun(6, {
        executeCase: async () => {
          live++;
          peak = Math.max(peak, live);
          bothSlotsTaken.arrive();
          // Both slots are taken at the start; holding them a while gives the workflow every chance
          // to schedule a third case if its window let it.
          await bothSlotsTaken.reached;
          await Context.current().sleep(100);
          live--;
          return success;
        },
      });

      const result = await execute(run.activities, runInput(6, { concurrentCases: 2 }));

      assert.equal(result.progress.success, 6);
      assert.equal(peak, 2);
    });
    test('at most scorerConcurrentCases cases are judged at once, however many wait', async () => {
      let live = 0;
      let peak = 0;
      const run = fakeRun(8, {
        scoreCase: async () => {
          live++;
          peak = Math.max(peak, live);
          await Context.current().sleep(150);
          live--;
          return { scores: [] };
        },
      });

      // Container phases are fast and many: several cases wait for a scoring slot together.
      const result = await execute(
        run.activities,
        runInput(8, { concurrentCases: 8, scorerConcurrentCases: 2 }),
      );

      assert.equal(result.progress.success, 8);
      assert.equal(run.recorder.of('scoreCase').length, 8);
      assert.equal(peak, 2);
    });
  });

  describe('retries and failures', () => {
    test('an infra failure is retried and the case succeeds; one that outlives its attempts is recorded not executed', async () => {
      const [flaky, broken] = [1001, 1002];
      const run = fakeRun(2, {
        executeCase: async (ref) => {
          if (ref.runCaseId === broken) throw new Error('docker daemon unreachable');
          if (Context.current().info.attempt === 1) throw new Error('docker daemon hiccup');
          return success;
        },
      });

      const input = runInput(2, { caseMaxAttempts: 2 });
      const result = await execute(run.activities, input);

      const attempts = (id: number) =>
        run.recorder
          .of('executeCase')
          .filter((c) => runCaseIdOf(c.input) === id)
          .map((c) => c.attempt);
      assert.deepEqual(attempts(flaky), [1, 2]);
      assert.deepEqual(attempts(broken), [1, 2]);
      assert.deepEqual(run.recorder.phasesOf(broken), ['executeCase', 'executeCase', 'finalizeCase']);
      const finalizeBroken = run.recorder.of('finalizeCase').find((c) => runCaseIdOf(c.input) === broken);
      assert.deepEqual(finalizeBroken?.input, {
        workflowId: workflowIdOf(input),
        experimentId: 42,
        runCaseId: broken,
        notExecutedError: 'E_CASE_NOT_EXECUTED: docker daemon unreachable',
      });
      assert.equal(result.outcome, 'completed');
      assert.equal(result.progress.success, 1);
      assert.equal(result.progress.failed, 1);
    });

    test('a permanent error (non-retryable at the activity boundary) is not retried', async () => {
      const run = fakeRun(1, {
        executeCase: activity(async () => {
          throw new SandboxSpecError('memory below the minimum');
        }),
      });

      const result = await execute(run.activities, runInput(1, { caseMaxAttempts: 3 }));

      assert.deepEqual(
        run.recorder.of('executeCase').map((c) => c.attempt),
        [1],
      );
      const notExecuted = (run.recorder.of('finalizeCase')[0]?.input as { notExecutedError: string })
        .notExecutedError;
      assert.match(notExecuted, /^E_CASE_NOT_EXECUTED: .*memory below the minimum/);
      assert.equal(result.progress.failed, 1);
    });

    test('a failing later phase is retried on its own: the container phase does not run again', async () => {
      const run = fakeRun(1, {
        finalizeCase: async () => {
          if (Context.current().info.attempt === 1) throw new Error('database connection reset');
          return { status: 'success', errorMessage: null, persisted: true };
        },
      });

      const result = await execute(run.activities, runInput(1));

      assert.deepEqual(run.recorder.phasesOf(1001), [
        'executeCase',
        'collectTrajectory',
        'scoreCase',
        'finalizeCase',
        'finalizeCase',
      ]);
      assert.equal(result.progress.success, 1);
    });
  });

  test('continue-as-new: past maxHistoryEvents the run drains its cases and continues with the cursor and counters', async () => {
    let unfinished = 0;
    const unfinishedWhenPaging: number[] = [];
    const base = fakeRun(5, {}, 2);
    const run = fakeRun(
      5,
      {
        executeCase: async (ref) => {
          unfinished++;
          return base.activities.executeCase(ref);
        },
        finalizeCase: async (p) => {
          unfinished--;
          return base.activities.finalizeCase(p);
        },
        listCasePage: async (p) => {
          unfinishedWhenPaging.push(unfinished);
          return base.activities.listCasePage(p);
        },
      },
      2,
    );

    const { result, firstRun } = await withFakes(run.activities, async (start) => {
      const handle = await start(runInput(5, { maxHistoryEvents: 1 }));
      const r = await handle.result();
      const first = await env.client.workflow
        .getHandle(handle.workflowId, handle.firstExecutionRunId)
        .describe();
      return { result: r, firstRun: first };
    });

    assert.equal(firstRun.status.name, 'CONTINUED_AS_NEW');
    // One prepareRun; each later run reads its page after the cursor the previous one carried.
    assert.equal(run.recorder.of('prepareRun').length, 1);
    // Decided before every case (one case per run at this cap), not only at the end of a page.
    assert.deepEqual(
      run.recorder.of('listCasePage').map((c) => (c.input as { afterPosition: number }).afterPosition),
      [1, 2, 3, 4, 5],
    );
    assert.deepEqual(unfinishedWhenPaging, [0, 0, 0, 0, 0], 'in-flight cases are drained before continuing');
    for (const id of run.ids) {
      assert.equal(
        run.recorder.phasesOf(id).filter((a) => a === 'executeCase').length,
        1,
        `case ${id} ran once`,
      );
    }
    assert.equal(result.outcome, 'completed');
    assert.deepEqual(
      { total: result.progress.total, started: result.progress.started, success: result.progress.success },
      { total: 5, started: 5, success: 5 },
    );
  });

  test('continue-as-new in the middle of a page of long cases: in-flight cases drain, the next run resumes after the last started one, every case runs once', async () => {
    let unfinished = 0;
    /** Unfinished cases when each continued run reads its first page. */
    const unfinishedWhenContinued: number[] = [];
    const runsSeen = new Set<string>();
    const base = fakeRun(8);
    const run = fakeRun(8, {
      executeCase: async (ref) => {
        unfinished++;
        await Context.current().sleep(200);
        return base.activities.executeCase(ref);
      },
      finalizeCase: async (p) => {
        unfinished--;
        return base.activities.finalizeCase(p);
      },
      listCasePage: async (p) => {
        const runId = Context.current().info.workflowExecution?.runId ?? '';
        if (!runsSeen.has(runId)) {
          runsSeen.add(runId);
          unfinishedWhenContinued.push(unfinished);
        }
        return base.activities.listCasePage(p);
      },
    });

    // One page holds all 8 cases: a cap of 40 events is crossed long before the page ends.
    const { result, runs } = await withFakes(run.activities, async (start) => {
      const handle = await start(runInput(8, { concurrentCases: 2, maxHistoryEvents: 40 }));
      const r = await handle.result();
      let count = 0;
      for await (const _ of env.client.workflow.list({ query: `WorkflowId = '${handle.workflowId}'` }))
        count++;
      return { result: r, runs: count };
    });

    assert.ok(runs >= 2, `the run continued as new (${runs} runs)`);
    const after = run.recorder
      .of('listCasePage')
      .map((c) => (c.input as { afterPosition: number }).afterPosition);
    assert.ok(
      after.some((p) => p > 0 && p < 8),
      `a continued run resumes inside the first page (listCasePage after ${after.join(', ')})`,
    );
    assert.ok(
      unfinishedWhenContinued.every((n) => n === 0),
      `in-flight cases are drained before continuing (${unfinishedWhenContinued.join(', ')})`,
    );
    for (const id of run.ids)
      assert.equal(
        run.recorder.phasesOf(id).filter((a) => a === 'executeCase').length,
        1,
        `case ${id} ran once`,
      );
    assert.equal(result.outcome, 'completed');
    assert.equal(result.progress.success, 8);
    assert.equal(result.progress.started, 8);
  });

  describe('permanent failures of the later phases', () => {
    /** What node-postgres throws for a unique violation (SQLSTATE class 23: no retry helps). */
    const uniqueViolation = () =>
      Object.assign(new Error('duplicate key value violates unique constraint'), { code: '23505' });

    test('a permanent database error in the trajectory phase ends that case failed with E_CASE_PERSIST_FAILED; the run goes on', async () => {
      const broken = 1002;
      const run = fakeRun(3, {
        collectTrajectory: caseActivity(async (ref) => {
          if (ref.runCaseId === broken) throw uniqueViolation();
          return { source: 'none', steps: 0 };
        }),
      });

      const result = await execute(run.activities, runInput(3));

      assert.equal(result.outcome, 'completed');
      assert.equal(result.progress.success, 2);
      assert.equal(result.progress.failed, 1);
      assert.deepEqual(run.recorder.phasesOf(broken), ['executeCase', 'collectTrajectory', 'finalizeCase']);
      const attempts = run.recorder.of('collectTrajectory').filter((c) => runCaseIdOf(c.input) === broken);
      assert.equal(attempts.length, 1, 'not retried');
      const fin = run.recorder.of('finalizeCase').find((c) => runCaseIdOf(c.input) === broken)?.input as {
        notExecutedError: string;
        discardPhases?: boolean;
      };
      assert.match(fin.notExecutedError, /^E_CASE_PERSIST_FAILED: .*duplicate key/);
      assert.equal(fin.discardPhases, true);
    });

    test('a finalize that fails for good falls back to a minimal failed row; if that fails too the case counts failed and the run still completes', async () => {
      const [fallsBack, hopeless] = [1001, 1002];
      const run = fakeRun(3, {
        finalizeCase: caseActivity(async (p): Promise<CaseFinalSummary> => {
          if (p.runCaseId === hopeless || (p.runCaseId === fallsBack && !p.discardPhases))
            throw uniqueViolation();
          return p.notExecutedError === null
            ? { status: 'success', errorMessage: null, persisted: true }
            : { status: 'failed', errorMessage: p.notExecutedError, persisted: true };
        }),
      });

      const result = await execute(run.activities, runInput(3));

      assert.equal(result.outcome, 'completed');
      assert.equal(result.progress.success, 1);
      assert.equal(result.progress.failed, 2);
      const finals = (id: number) =>
        run.recorder
          .of('finalizeCase')
          .filter((c) => runCaseIdOf(c.input) === id)
          .map((c) => (c.input as { discardPhases?: boolean }).discardPhases ?? false);
      assert.deepEqual(finals(fallsBack), [false, true]);
      assert.deepEqual(finals(hopeless), [false, true]);
      // The two cases run at once: either may end first.
      const failures = result.progress.recentFailures
        .map((f) => [f.runCaseId, f.error.slice(0, 22)])
        .sort((a, b) => Number(a[0]) - Number(b[0]));
      assert.deepEqual(failures, [
        [fallsBack, 'E_CASE_PERSIST_FAILED:'],
        [hopeless, 'E_CASE_PERSIST_FAILED:'],
      ]);
    });
  });

  describe('stopping a run', () => {
    test('cancel: in-flight container phases are cancelled and awaited, the rest recorded canceled, the run ends cancelled', async () => {
      const events: string[] = [];
      const started = arrivals(2);
      const run = fakeRun(4, {
        executeCase: blockedUntilCancelled(started.arrive, () => events.push('container removed')),
        cancelRun: async () => {
          events.push('cancelRun');
          return 4;
        },
      });

      const input = runInput(4, { concurrentCases: 2 });
      const { outcome, progress } = await withFakes(run.activities, async (start) => {
        const handle = await start(input);
        await started.reached;
        await handle.cancel();
        const failure = await handle.result().then(
          () => assert.fail('a cancelled run does not complete'),
          (err: unknown) => err,
        );
        return { outcome: failure, progress: await handle.query(progressQuery) };
      });

      assert.ok(
        outcome instanceof WorkflowFailedError && outcome.cause instanceof CancelledFailure,
        String(outcome),
      );
      assert.deepEqual(events, ['container removed', 'container removed', 'cancelRun']);
      assert.deepEqual(
        run.recorder.of('cancelRun').map((c) => c.input),
        [
          {
            workflowId: workflowIdOf(input),
            experimentId: 42,
            reason: 'canceled via Temporal',
            markExperimentTerminated: true,
          },
        ],
      );
      // The two cases waiting for a slot never started; nothing was finalized over the cancel.
      assert.equal(run.recorder.of('executeCase').length, 2);
      assert.equal(run.recorder.of('finalizeCase').length, 0);
      assert.equal(progress.canceled, 4);
    });

    test("the platform's termination mid-run: the watcher stops the cases and the run ends canceled with the reason", async () => {
      const started = arrivals(2);
      let executing = 0;
      const run = fakeRun(3, {
        executeCase: blockedUntilCancelled(
          () => {
            executing++;
            started.arrive();
          },
          () => {},
        ),
        checkRunState: async () => ({ stop: executing >= 2 ? 'manual terminated by the platform' : null }),
        cancelRun: async () => 3,
      });

      const result = await execute(
        run.activities,
        runInput(3, { concurrentCases: 2, terminationCheckSeconds: 1 }),
      );

      assert.equal(result.outcome, 'canceled');
      assert.equal(result.detail, 'manual terminated by the platform');
      assert.equal(result.progress.canceled, 3);
      const cancel = run.recorder
        .of('cancelRun')
        .map((c) => c.input as { reason: string; markExperimentTerminated: boolean });
      assert.deepEqual(
        cancel.map(({ reason, markExperimentTerminated }) => ({ reason, markExperimentTerminated })),
        [{ reason: 'manual terminated by the platform', markExperimentTerminated: false }],
      );
      assert.equal(run.recorder.of('finalizeCase').length, 0);
    });

    test("the platform's termination seen by a case (its row canceled) stops the run at once, not at the watcher's tick", async () => {
      const run = fakeRun(6, {
        // The platform canceled every remaining row and marked the experiment terminated.
        executeCase: async () => ({ status: 'not_active', errorMessage: null, exitCode: null }),
        checkRunState: async () => ({ stop: 'manual terminated by the platform' }),
        cancelRun: async () => 0,
      });

      // The watcher would look only after an hour: the case's own look must decide.
      const result = await execute(run.activities, runInput(6, { concurrentCases: 2 }));

      assert.equal(result.outcome, 'canceled');
      assert.equal(result.detail, 'manual terminated by the platform');
      assert.ok(run.recorder.of('executeCase').length < 6, 'no case starts after the termination is known');
      assert.equal(run.recorder.of('cancelRun').length, 1);
    });
  });
});
