import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { amqpUrl, ConfigError, loadConfig } from '../../src/config';

const MINIMAL_ENV = {
  RABBITMQ_HOST: '127.0.0.1',
  RABBITMQ_USER: 'guest',
  RABBITMQ_PASSWORD: 'guest',
  RABBITMQ_VHOST: '/',
  REDIS_HOST: 'redis.internal',
};

describe('loadConfig (test_config port)', () => {
  test('the minimal environment gives the contract defaults', () => {
    const config = loadConfig(MINIMAL_ENV);
    const url = amqpUrl(config);
    assert.ok(url.startsWith('amqp://guest:guest@127.0.0.1'), url);
    assert.ok(url.includes('%2F'), url);
    assert.ok(config.consumer.concurrentCases > 0);
    assert.equal(config.redis.host, 'redis.internal');
    assert.equal(config.redis.processingLockTtlSeconds, 300);
    assert.equal(config.redis.processedTtlSeconds, 86400);
  });

  test("the original's legacy-runner variables are validated at start (§9) but steer nothing", () => {
    const legacy = {
      CONSUMER_DOCKER_NETWORK: 'bench-net',
      CONSUMER_AGENT_EXEC_COMMAND: 'sleep infinity',
      CONSUMER_DOCKER_PULL_POLICY: ' If-Not-Present ',
      CONSUMER_DOCKER_PULL_TIMEOUT_SECONDS: '30',
      CONSUMER_DOCKER_RUN_TIMEOUT_SECONDS: '30',
      CONSUMER_DOCKER_INSPECT_TIMEOUT_SECONDS: '5',
      CONSUMER_EVALUATOR_TIMEOUT_SECONDS: '30',
    };
    assert.deepEqual(loadConfig({ ...MINIMAL_ENV, ...legacy }), loadConfig(MINIMAL_ENV));
    for (const [variable, bad] of [
      ['CONSUMER_DOCKER_PULL_POLICY', 'sometimes'],
      ['CONSUMER_DOCKER_RUN_TIMEOUT_SECONDS', 'soon'],
      ['CONSUMER_EVALUATOR_TIMEOUT_SECONDS', '-1'],
    ] as const) {
      assert.throws(
        () => loadConfig({ ...MINIMAL_ENV, [variable]: bad }),
        (err: unknown) => err instanceof ConfigError && err.variable === variable,
      );
    }
  });

  test('a malformed integer → ConfigError naming the variable', () => {
    assert.throws(
      () => loadConfig({ ...MINIMAL_ENV, CONSUMER_CONCURRENT_CASES: 'two' }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.equal(err.variable, 'CONSUMER_CONCURRENT_CASES');
        assert.match(err.message, /CONSUMER_CONCURRENT_CASES/);
        return true;
      },
    );
  });

  test('SANDBOX_RUNTIME: unset or blank = the daemon default, else a runtime name', () => {
    assert.equal(loadConfig(MINIMAL_ENV).sandbox.runtime, undefined);
    assert.equal(loadConfig({ ...MINIMAL_ENV, SANDBOX_RUNTIME: ' ' }).sandbox.runtime, undefined);
    assert.equal(loadConfig({ ...MINIMAL_ENV, SANDBOX_RUNTIME: 'crun' }).sandbox.runtime, 'crun');
    assert.throws(
      () => loadConfig({ ...MINIMAL_ENV, SANDBOX_RUNTIME: 'crun --debug' }),
      (err: unknown) => err instanceof ConfigError && err.variable === 'SANDBOX_RUNTIME',
    );
  });

  test('SANDBOX_WARM_POOL_SIZE: off (0) unless set; idle drain after 60 s', () => {
    assert.deepEqual(loadConfig(MINIMAL_ENV).sandbox.warmPool, { size: 0, idleSeconds: 60 });
    assert.deepEqual(
      loadConfig({ ...MINIMAL_ENV, SANDBOX_WARM_POOL_SIZE: '4', SANDBOX_WARM_POOL_IDLE_SECONDS: '5' }).sandbox
        .warmPool,
      { size: 4, idleSeconds: 5 },
    );
    assert.throws(
      () => loadConfig({ ...MINIMAL_ENV, SANDBOX_WARM_POOL_SIZE: '-1' }),
      (err: unknown) => err instanceof ConfigError && err.variable === 'SANDBOX_WARM_POOL_SIZE',
    );
  });
});

describe('case isolation on the network', () => {
  test('on by default with no extra host ports; SANDBOX_HOST_PORTS is a list of ports', () => {
    const defaults = loadConfig(MINIMAL_ENV).sandbox;
    assert.equal(defaults.isolateCases, true);
    assert.deepEqual(defaults.hostPorts, []);
    const set = loadConfig({
      ...MINIMAL_ENV,
      SANDBOX_ISOLATE_CASES: 'false',
      SANDBOX_HOST_PORTS: '11434, 8080,11434',
    });
    assert.equal(set.sandbox.isolateCases, false);
    assert.deepEqual(set.sandbox.hostPorts, [11434, 8080]);
    for (const bad of ['0', '65536', 'http', '80;81'])
      assert.throws(
        () => loadConfig({ ...MINIMAL_ENV, SANDBOX_HOST_PORTS: bad }),
        (err: unknown) => err instanceof ConfigError && err.variable === 'SANDBOX_HOST_PORTS',
        bad,
      );
  });
});

describe('deployment id', () => {
  const db = (url: string) => ({ ...MINIMAL_ENV, DATABASE_URL: url });

  test('AGENTBENCH_DEPLOYMENT_ID is taken as given', () => {
    assert.equal(
      loadConfig({ ...MINIMAL_ENV, AGENTBENCH_DEPLOYMENT_ID: 'prod-eu-1' }).deploymentId,
      'prod-eu-1',
    );
  });

  test('a malformed AGENTBENCH_DEPLOYMENT_ID → ConfigError naming the variable', () => {
    for (const bad of ['Prod', '-x', 'a b', 'x'.repeat(64)]) {
      assert.throws(
        () => loadConfig({ ...MINIMAL_ENV, AGENTBENCH_DEPLOYMENT_ID: bad }),
        (err: unknown) => err instanceof ConfigError && err.variable === 'AGENTBENCH_DEPLOYMENT_ID',
      );
    }
  });

  test('derived: the same for every process of one database, different for another database or task queue', () => {
    const a = loadConfig(db('postgres://u:secret1@pg.internal:5432/platform_a')).deploymentId;
    assert.match(a, /^auto-[0-9a-f]{12}$/);
    assert.equal(
      loadConfig(db('postgres://other:secret2@pg.internal/platform_a')).deploymentId,
      a,
      'credentials and a default port do not change it',
    );
    assert.notEqual(loadConfig(db('postgres://u:secret1@pg.internal:5432/platform_b')).deploymentId, a);
    assert.notEqual(
      loadConfig({ ...db('postgres://u:secret1@pg.internal:5432/platform_a'), TEMPORAL_TASK_QUEUE: 'q2' })
        .deploymentId,
      a,
    );
  });
});

describe('API settings', () => {
  const secret = 'a-long-enough-secret-1';
  test('API_TOKENS: name:secret or name:sha256:<hex>; only digests are kept', async () => {
    const { createHash } = await import('node:crypto');
    const digest = createHash('sha256').update(secret).digest('hex');
    const config = loadConfig({ ...MINIMAL_ENV, API_TOKENS: `ci:${secret}, ops:sha256:${digest}` });
    assert.deepEqual(
      config.api.tokens.map((t) => [t.name, t.sha256.toString('hex')]),
      [
        ['ci', digest],
        ['ops', digest],
      ],
    );
    assert.ok(!JSON.stringify(config).includes(secret), 'the secret itself is not kept');
  });

  test('a malformed token entry → ConfigError naming the variable, never the value', () => {
    for (const bad of [
      'no-colon-here-at-all',
      'ci:x7Qz9',
      'bad name:a-long-enough-secret-1',
      'ci:sha256:1234',
    ]) {
      assert.throws(
        () => loadConfig({ ...MINIMAL_ENV, API_READ_TOKENS: bad }),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError);
          assert.equal(err.variable, 'API_READ_TOKENS');
          assert.ok(!err.message.includes(bad.slice(bad.indexOf(':') + 1)), err.message);
          return true;
        },
      );
    }
  });

  test('API_ALLOW_ANONYMOUS=true only with a loopback API_HOST', () => {
    assert.equal(loadConfig({ ...MINIMAL_ENV, API_ALLOW_ANONYMOUS: 'true' }).api.allowAnonymous, true);
    assert.throws(
      () => loadConfig({ ...MINIMAL_ENV, API_ALLOW_ANONYMOUS: 'true', API_HOST: '0.0.0.0' }),
      (err: unknown) => err instanceof ConfigError && err.variable === 'API_ALLOW_ANONYMOUS',
    );
  });

  test('result events are on by default, to agentbench.results', () => {
    const { resultEvents } = loadConfig(MINIMAL_ENV);
    assert.deepEqual(resultEvents, { enabled: true, exchange: 'agentbench.results', retentionDays: 7 });
    assert.equal(loadConfig({ ...MINIMAL_ENV, RESULT_EVENTS_ENABLED: 'false' }).resultEvents.enabled, false);
  });
});
