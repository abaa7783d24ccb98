import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
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
  test('there are recorded histories of every representative run, of the current, v2 and v1 shapes', () => {
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
      // v2: runs whose container phase never finished a case itself (trajectory and finalize always activities).
      assert.ok(
        files.some((f) => f.startsWith(`v2-${name}`)),
        `missing history v2-${name}`,
      );
      // v1: runs started before the trajectory/scoring phases (patched 'case-phases-v2').
      assert.ok(
        files.some((f) => f.startsWith(`v1-${name}`)),
        `missing history v1-${name}`,
      );
    }
    assert.ok(files.includes('scored-concurrent.json'), 'missing history scored-concurrent');
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
