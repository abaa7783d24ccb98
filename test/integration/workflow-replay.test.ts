import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { readHistoryFile, replayHistories } from '../../src/temporal/history-replay';
import { installTemporalLogging } from '../../src/temporal/runtime-logging';
import { createLogger } from '../../src/logger';

// The non-determinism test provokes failing workflow tasks on purpose: keep them out of the output.
installTemporalLogging(createLogger({ level: 'silent' }), 'ERROR');

const HISTORIES = path.resolve(__dirname, '../histories');
const files = readdirSync(HISTORIES)
  .filter((f) => f.endsWith('.json'))
  .sort();

/**
 * Determinism guard: recorded histories of representative runs (test/support/record-histories.ts)
 * must replay through the current workflow code, or running workflows would break on deploy.
 */
describe('workflow replay of recorded histories', () => {
  test('there are recorded histories of every representative run, of the current, v4 and v3 shapes', () => {
    for (const name of [
      'mixed-success-and-failure',
      'continued-as-new',
      'failed-before-start',
      'skipped-stale',
      'canceled-mid-run',
      'platform-terminated',
    ]) {
      assert.ok(
        files.some((f) => f.startsWith(name)),
        `missing history ${name}`,
      );
      // v4: runs whose later-phase failures escaped the case and that continued as new only
      // between pages (before patched 'case-phase-failures' and 'continue-as-new-any-point').
      assert.ok(
        files.some((f) => f.startsWith(`v4-${name}`)),
        `missing history v4-${name}`,
      );
      // v3: fresh runs that read their first page with a listCasePage activity after prepareRun
      // (before patched 'first-page-in-prepare', now deprecated: its prepareRun result has no
      // page, so the workflow reads it with listCasePage, as a worker whose prepareRun predates
      // firstPageLimit would make it do).
      assert.ok(
        files.some((f) => f.startsWith(`v3-${name}`)),
        `missing history v3-${name}`,
      );
    }
    assert.ok(files.includes('scored-concurrent.json'), 'missing history scored-concurrent');
    assert.ok(files.includes('v4-scored-concurrent.json'), 'missing history v4-scored-concurrent');
  });

  test("a fresh run's first case follows prepareRun directly; older and continued runs read a page first", () => {
    /** Activity types scheduled before the first case's container phase (all of them if none). */
    const activitiesBeforeFirstCase = (file: string): string[] => {
      const { events } = JSON.parse(readFileSync(path.join(HISTORIES, file), 'utf8')) as {
        events: Array<{
          activityTaskScheduledEventAttributes?: { activityType: { name: string }; activityId: string };
        }>;
      };
      const scheduled = events.flatMap((e) =>
        e.activityTaskScheduledEventAttributes ? [e.activityTaskScheduledEventAttributes] : [],
      );
      const first = scheduled.findIndex((a) => /^case-\d+\/run$/.test(a.activityId));
      return scheduled.slice(0, first < 0 ? undefined : first).map((a) => a.activityType.name);
    };
    const generation = (f: string) => /^(v\d+)-/.exec(f)?.[1] ?? 'current';
    // Runs that never reached the case loop have only prepareRun, whatever their generation.
    const fresh = files.filter(
      (f) => !/(failed-before-start|skipped-stale)\.json$/.test(f) && !/\.run([2-9]|\d\d+)\.json$/.test(f),
    );
    for (const f of fresh) {
      const before = activitiesBeforeFirstCase(f);
      if (generation(f) === 'current' || generation(f) === 'v4') {
        assert.deepEqual(before, ['prepareRun'], `${f}: the first page came with prepareRun`);
      } else {
        assert.deepEqual(
          before,
          ['prepareRun', 'listCasePage'],
          `${f}: recorded before 'first-page-in-prepare'`,
        );
      }
    }
    assert.ok(fresh.filter((f) => generation(f) === 'current').length >= 5, 'current fresh-run histories');
    assert.ok(
      fresh.some((f) => generation(f) === 'v3'),
      'v3 fresh-run histories',
    );
    // A continued run (continue-as-new, no prepareRun) starts with a listCasePage activity.
    for (const f of files.filter((f) => /\.run([2-9]|\d\d+)\.json$/.test(f))) {
      assert.equal(
        activitiesBeforeFirstCase(f)[0],
        'listCasePage',
        `${f}: a continued run pages with listCasePage`,
      );
      assert.ok(!activitiesBeforeFirstCase(f).includes('prepareRun'), f);
    }
  });

  test('every recorded history replays with the current workflow code', async () => {
    const inputs = await Promise.all(files.map((f) => readHistoryFile(path.join(HISTORIES, f))));
    const results = await replayHistories(inputs);
    assert.equal(results.length, files.length);
    for (const r of results) assert.equal(r.error, undefined, `${r.workflowId}: ${r.error?.message}`);
  });

  test('a non-deterministic change of the workflow fails the replay', async () => {
    const inputs = await Promise.all(files.map((f) => readHistoryFile(path.join(HISTORIES, f))));
    const results = await replayHistories(
      inputs,
      path.resolve(__dirname, '../fixtures/nondeterministic-workflows/index.ts'),
    );
    for (const r of results) {
      assert.ok(r.error, `${r.workflowId} should not replay`);
      assert.match(
        `${r.error.name}: ${r.error.message}`,
        /Determinism|Nondeterminism|non-determinism|nondeterministic/i,
      );
    }
  });
});
