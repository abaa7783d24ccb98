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
    assert.equal(config.consumer.dockerPullPolicy, 'always');
    assert.equal(config.redis.host, 'redis.internal');
    assert.equal(config.redis.processingLockTtlSeconds, 300);
    assert.equal(config.redis.processedTtlSeconds, 86400);
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
});
