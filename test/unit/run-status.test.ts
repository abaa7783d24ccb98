import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  emptyRunCaseCounts,
  endedRunStatus,
  errorCodeOf,
  runStatus,
  type RunCaseCounts,
} from '../../src/domain/run-status';

const counts = (c: Partial<RunCaseCounts>): RunCaseCounts => {
  const base = { ...emptyRunCaseCounts(), ...c };
  const { total: _total, ...byStatus } = base;
  return { ...base, total: c.total ?? Object.values(byStatus).reduce((a, b) => a + b, 0) };
};

describe('run status', () => {
  test('open workflow: queued until a case started, running after', () => {
    assert.equal(runStatus('RUNNING', counts({ queued: 3 })), 'queued');
    assert.equal(runStatus('RUNNING', counts({ queued: 2, running: 1 })), 'running');
    assert.equal(runStatus('RUNNING', counts({ queued: 2, success: 1 })), 'running');
  });

  test('closed workflow: what its cases say (the platform rule: failed only without any success)', () => {
    assert.equal(runStatus('COMPLETED', counts({ success: 2, failed: 1 })), 'done');
    assert.equal(runStatus('COMPLETED', counts({ failed: 2, timeout: 1 })), 'failed');
    assert.equal(runStatus('COMPLETED', counts({ success: 2, canceled: 1 })), 'canceled');
    assert.equal(runStatus('COMPLETED', counts({ pending: 2 })), 'canceled', 'skipped');
  });

  test('a workflow closed from outside wins over its cases', () => {
    assert.equal(runStatus('TERMINATED', counts({ success: 2 })), 'canceled');
    assert.equal(runStatus('CANCELLED', counts({ success: 2 })), 'canceled');
    assert.equal(runStatus('FAILED', counts({ success: 2 })), 'failed');
  });

  test('no workflow found: by the cases alone', () => {
    assert.equal(runStatus(null, counts({ queued: 1 })), 'queued');
    assert.equal(runStatus(null, counts({ success: 1 })), 'done');
    assert.equal(endedRunStatus(counts({})), 'done');
  });

  test('error codes are the E_ prefix of a message', () => {
    assert.equal(errorCodeOf('E_AGENT_EXIT_NON_ZERO: exit code 1'), 'E_AGENT_EXIT_NON_ZERO');
    assert.equal(errorCodeOf('manual terminated by ops'), null);
    assert.equal(errorCodeOf(null), null);
  });
});
