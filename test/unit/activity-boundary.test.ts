import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ApplicationFailure } from '@temporalio/common';
import { activity } from '../../activities/activity-boundary';
import { MissingRunRequestError } from '../../src/db/errors';
import { DockerInfraError, SandboxSpecError } from '../../src/docker/errors';
import { RuntimeSpecError } from '../../src/domain/runtime-spec';

const failing = (err: unknown) => activity(async (_input: { id: number }) => Promise.reject(err));

describe('activity boundary: permanent errors are not retried by Temporal', () => {
  for (const err of [
    new SandboxSpecError('files[0].path: must not target the Docker socket'),
    new RuntimeSpecError('E_RUNTIME_SPEC_IMAGE_REQUIRED', 'agent.runtime_spec_json.agent_image'),
    new MissingRunRequestError('no stored run request for experiment-1-x'),
  ]) {
    test(`${err.name} leaves as a non-retryable ApplicationFailure of type ${err.code}`, async () => {
      await assert.rejects(failing(err)({ id: 1 }), (thrown: unknown) => {
        assert.ok(thrown instanceof ApplicationFailure);
        assert.equal(thrown.nonRetryable, true);
        assert.equal(thrown.type, err.code);
        // The same text as before: it is what E_CASE_NOT_EXECUTED quotes.
        assert.equal(thrown.message, err.message);
        assert.equal(thrown.cause, err);
        return true;
      });
    });
  }

  test('infrastructure errors and anything else stay retryable (left to the retry policy)', async () => {
    for (const err of [new DockerInfraError('E_DOCKER_CREATE', 'daemon busy'), new Error('boom'), 'text']) {
      await assert.rejects(failing(err)({ id: 1 }), (thrown: unknown) => thrown === err);
    }
  });

  test('results pass through unchanged', async () => {
    const echo = activity(async (input: { id: number }) => ({ got: input.id }));
    assert.deepEqual(await echo({ id: 7 }), { got: 7 });
  });
});
