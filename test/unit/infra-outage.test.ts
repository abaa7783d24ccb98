import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isServiceUnreachable, rideOutOutage } from '../../activities/infra-outage';
import { isPermanentDatabaseError } from '../../src/db/errors';
import {
  caseRetryBudgetSeconds,
  INFRA_OUTAGE_BUDGET_MS,
  TEMPORAL_OUTAGE_BUDGET_MS,
} from '../../src/domain/retry-budget';
import { DockerInfraError } from '../../src/docker/errors';
import { createLogger } from '../../src/logger';

const log = createLogger({ level: 'silent' });
const withCode = (message: string, code: string) => Object.assign(new Error(message), { code });

test('permanent database errors are the SQLSTATE classes 22, 23 and 42; connection failures are not', () => {
  assert.equal(isPermanentDatabaseError(withCode('invalid input syntax', '22P02')), true);
  assert.equal(isPermanentDatabaseError(withCode('duplicate key', '23505')), true);
  assert.equal(isPermanentDatabaseError(withCode('relation does not exist', '42P01')), true);
  assert.equal(isPermanentDatabaseError(withCode('terminating connection', '57P01')), false);
  assert.equal(isPermanentDatabaseError(withCode('connect ECONNREFUSED', 'ECONNREFUSED')), false);
  assert.equal(isPermanentDatabaseError(new Error('no code')), false);
});

test('an unreachable Docker daemon or Postgres is recognised, also as the cause of our own errors', () => {
  assert.ok(isServiceUnreachable(withCode('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED')));
  assert.ok(isServiceUnreachable(new Error('Connection terminated unexpectedly')));
  assert.ok(isServiceUnreachable(withCode('terminating connection due to administrator command', '57P01')));
  assert.ok(
    isServiceUnreachable(
      new DockerInfraError('E_DOCKER_CREATE', 'write EPIPE', { cause: withCode('write EPIPE', 'EPIPE') }),
    ),
  );
  assert.ok(isServiceUnreachable(new Error('connect ENOENT /var/run/docker.sock')));
  assert.ok(
    isServiceUnreachable(
      Object.assign(withCode('connect ENOENT /tmp/chaos.sock', 'ENOENT'), { syscall: 'connect' }),
    ),
  );
  // A missing program or file is no outage: it is not waited out.
  assert.ok(
    !isServiceUnreachable(
      Object.assign(withCode('spawn python3 ENOENT', 'ENOENT'), { syscall: 'spawn python3' }),
    ),
  );
  assert.ok(
    !isServiceUnreachable(Object.assign(withCode("open '/x/case.json'", 'ENOENT'), { syscall: 'open' })),
  );
  assert.ok(!isServiceUnreachable(withCode('duplicate key value', '23505')));
  assert.ok(
    !isServiceUnreachable(new DockerInfraError('E_DOCKER_CREATE', 'No such image: bench/none:latest')),
  );
});

test('rideOutOutage retries only while the service is unreachable, within its budget', async () => {
  let calls = 0;
  const value = await rideOutOutage(
    async () => {
      if (++calls < 3) throw withCode('connect ECONNREFUSED', 'ECONNREFUSED');
      return 'stored';
    },
    { what: 'test', log, budgetMs: 10_000 },
  );
  assert.equal(value, 'stored');
  assert.equal(calls, 3);

  let permanent = 0;
  await assert.rejects(
    rideOutOutage(
      async () => {
        permanent++;
        throw withCode('duplicate key', '23505');
      },
      { what: 'test', log },
    ),
    /duplicate key/,
  );
  assert.equal(permanent, 1, 'a permanent error is not retried');

  let beyond = 0;
  await assert.rejects(
    rideOutOutage(
      async () => {
        beyond++;
        throw withCode('connect ECONNREFUSED', 'ECONNREFUSED');
      },
      { what: 'test', log, budgetMs: 500 },
    ),
    /ECONNREFUSED/,
  );
  assert.equal(beyond, 1, 'a budget shorter than the first wait gives up at once');
});

test("a case's retry budget is time: its full-length attempts plus a Temporal and a Docker/Postgres outage", () => {
  // CONSUMER_MAX_RETRIES=3 of a 180 s case (activity timeout 2×180 + 60 + 120 = 540 s).
  const budget = caseRetryBudgetSeconds({ caseActivityTimeoutSeconds: 540, caseMaxAttempts: 3 });
  assert.equal(budget, 3 * 540 + (TEMPORAL_OUTAGE_BUDGET_MS + INFRA_OUTAGE_BUDGET_MS) / 1000);
  // Longer than the 60 s outages promised, on top of every attempt the count allowed.
  assert.ok(TEMPORAL_OUTAGE_BUDGET_MS > 60_000 && INFRA_OUTAGE_BUDGET_MS > 60_000);
});
