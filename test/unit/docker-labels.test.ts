import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { caseContainerName, LABELS } from '../../src/docker/labels';

const DOCKER_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;

describe('caseContainerName', () => {
  test('is readable, valid for Docker and stable for the same inputs', () => {
    const name = caseContainerName('experiment-42-msg-1', '901', 3);
    assert.match(name, /^agentbench-case-901-[0-9a-f]{10}-a3$/);
    assert.match(name, DOCKER_NAME);
    assert.equal(caseContainerName('experiment-42-msg-1', 901, 3), name, 'string and numeric ids agree');
  });

  test('differs per workflow and per attempt', () => {
    const names = new Set([
      caseContainerName('experiment-42-msg-1', 901, 1),
      caseContainerName('experiment-42-msg-2', 901, 1),
      caseContainerName('experiment-42-msg-1', 901, 2),
      caseContainerName('experiment-42-msg-1', 902, 1),
    ]);
    assert.equal(names.size, 4);
  });

  test('sanitizes odd run case ids into a valid name', () => {
    assert.match(caseContainerName('wf', 'a b/c:d', 1), DOCKER_NAME);
    assert.match(caseContainerName('wf', '', 1), /^agentbench-case-unknown-/);
  });

  test('label keys are the agreed ones', () => {
    assert.equal(LABELS.managed, 'io.agentbench.managed');
    assert.equal(LABELS.workflowId, 'io.agentbench.workflow-id');
  });
});
