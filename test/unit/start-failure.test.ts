import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { ServiceError } from '@temporalio/client';
import { MessageRowsMissingError } from '../../src/db/errors';
import { classifyStartFailure } from '../../src/temporal/start-failure';

/** What the client throws for a refused start: a ServiceError whose cause is the gRPC error. */
function startError(code: number, details: string): ServiceError {
  const grpc = Object.assign(new Error(`${code} ${details}`), { code, details, metadata: {} });
  return new ServiceError('Failed to start Workflow', { cause: grpc });
}

function pgError(code: string): pg.DatabaseError {
  return Object.assign(new pg.DatabaseError('db said no', 0, 'error'), { code });
}

describe('classifyStartFailure', () => {
  test('what Temporal says about the message itself is permanent', () => {
    for (const [code, details] of [
      [3, 'WorkflowId length exceeds limit.'],
      [3, 'Memo size exceeds limit.'],
      [3, 'search attribute AgentKey value size 100002 exceeds size limit 2048'],
      [8, 'grpc: received message larger than max (5000162 vs. 4194304)'],
    ] as const) {
      const c = classifyStartFailure(startError(code, details));
      assert.equal(c.kind, 'permanent', details);
      assert.equal(c.kind === 'permanent' && c.code, 'E_WORKFLOW_START_REJECTED');
      assert.match(c.error, new RegExp(details.replace(/[.()]/g, '\\$&')));
    }
  });

  test('outages, rate limits and deployment-wide refusals are transient', () => {
    for (const [code, details] of [
      [14, 'connection refused'],
      [4, 'deadline exceeded'],
      [8, 'namespace rate limit exceeded'],
      [3, 'Namespace default has no mapping defined for search attribute ExperimentId'],
      [3, 'search attribute ExperimentId is not defined'],
      [5, 'Namespace agentbench is not found.'],
      [7, 'Request unauthorized.'],
    ] as const)
      assert.equal(classifyStartFailure(startError(code, details)).kind, 'transient', details);
    assert.equal(classifyStartFailure(new Error('ECONNREFUSED 127.0.0.1:5432')).kind, 'transient');
  });

  test('our own permanent errors keep their code; Postgres data errors are the message’s, others are not', () => {
    const missing = classifyStartFailure(
      new MessageRowsMissingError('E_EXPERIMENT_NOT_FOUND', 'experiment 9 does not exist'),
    );
    assert.deepEqual(missing, {
      kind: 'permanent',
      code: 'E_EXPERIMENT_NOT_FOUND',
      error: 'E_EXPERIMENT_NOT_FOUND: experiment 9 does not exist',
    });
    const tooLong = classifyStartFailure(pgError('22001'));
    assert.equal(tooLong.kind === 'permanent' && tooLong.code, 'E_RUN_REQUEST_REJECTED');
    for (const code of ['57P01', '08006', '53300', '40001', '42P01'])
      assert.equal(classifyStartFailure(pgError(code)).kind, 'transient', code);
  });
});
