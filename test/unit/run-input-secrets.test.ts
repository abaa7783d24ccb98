import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  isSealed,
  protectRunInput,
  revealRunInput,
  RunInputSecretsError,
} from '../../src/db/run-input-secrets';
import { REDACTED } from '../../src/domain/secret-redaction';
import { ConfigError, loadConfig, parseSecretsKey } from '../../src/config';

const request = {
  experiment: { id: 1, triggered_by: 'u' },
  agent: {
    id: 5,
    agent_key: 'a',
    runtime_spec_json: {
      agent_image: 'img',
      env: { GITHUB_TOKEN: 'ghp-SECRET', LANG: 'C' },
      services: [{ name: 'db', env: { POSTGRES_PASSWORD: 'pw-SECRET' } }],
      max_tokens: 100,
    },
  },
  scorers: [
    {
      id: 3,
      scorer_key: 'task_success',
      scorer_config: {
        api_key: 'sk-SECRET',
        access_token: 'tok-SECRET',
        model_name: 'm',
        base_url: 'http://j',
      },
    },
  ],
};

describe('protectRunInput / revealRunInput (the stored run input)', () => {
  test('with a key: scorer secrets redacted, agent secrets sealed and opened again; the rest unchanged', () => {
    const key = randomBytes(32);
    const stored = protectRunInput(request, key);
    assert.deepEqual(stored.unsealed, []);
    const text = JSON.stringify(stored.request);
    assert.ok(!text.includes('SECRET'), text);
    assert.deepEqual(stored.request.scorers[0]?.scorer_config, {
      api_key: REDACTED,
      access_token: REDACTED,
      model_name: 'm',
      base_url: 'http://j',
    });
    const spec = stored.request.agent.runtime_spec_json;
    assert.ok(isSealed(spec.env.GITHUB_TOKEN));
    assert.equal(spec.env.LANG, 'C');
    assert.equal(spec.max_tokens, 100);

    const revealed = revealRunInput(stored.request, key);
    assert.deepEqual(revealed.agent, request.agent);
    assert.equal(revealed.scorers[0]?.scorer_config.access_token, REDACTED, 'never restored from the row');
  });

  test('without a key: agent secrets redacted too, their paths (not values) reported', () => {
    const stored = protectRunInput(request, undefined);
    assert.ok(!JSON.stringify(stored.request).includes('SECRET'));
    assert.deepEqual(stored.unsealed, [
      'agent.runtime_spec_json.env.GITHUB_TOKEN',
      'agent.runtime_spec_json.services[0].env.POSTGRES_PASSWORD',
    ]);
    assert.deepEqual(revealRunInput(stored.request, undefined), stored.request);
  });

  test('a sealed value opens only with its key', () => {
    const stored = protectRunInput(request, randomBytes(32)).request;
    assert.throws(() => revealRunInput(stored, undefined), RunInputSecretsError);
    assert.throws(
      () => revealRunInput(stored, randomBytes(32)),
      (err: unknown) => err instanceof RunInputSecretsError && !String(err).includes('ghp-SECRET'),
    );
  });

  const urlRequest = {
    agent: {
      runtime_spec_json: {
        env: {
          DATABASE_URL: 'postgres://app:pw-SECRET@db:5432/x',
          MIRROR: 'https://bot:tok-SECRET@git.test/org/repo.git',
          JDBC: 'jdbc:postgresql://u:jdbc-SECRET@db/x',
          PUBLIC_URL: 'https://api.test/v1',
          CLONE: 'ssh://git@git.test/org/repo.git',
          LOOKS_SEALED: 'enc:v1:not-really',
        },
        services: [{ name: 'db', env: { REPLICA: 'redis://:redis-SECRET@cache:6379' } }],
      },
    },
    scorers: [
      { id: 3, scorer_config: { base_url: 'https://judge:judge-SECRET@judge.test/v1', model_name: 'm' } },
    ],
  };

  test('with a key: env values holding a URL password are sealed whatever their name, and opened again', () => {
    const key = randomBytes(32);
    const stored = protectRunInput(urlRequest, key);
    assert.deepEqual(stored.unsealed, []);
    const text = JSON.stringify(stored.request);
    assert.ok(!text.includes('SECRET'), text);
    const env = stored.request.agent.runtime_spec_json.env;
    for (const name of ['DATABASE_URL', 'MIRROR', 'JDBC'] as const) assert.ok(isSealed(env[name]), name);
    assert.ok(isSealed(stored.request.agent.runtime_spec_json.services[0]?.env.REPLICA ?? ''));
    assert.equal(env.PUBLIC_URL, 'https://api.test/v1');
    assert.equal(env.CLONE, 'ssh://git@git.test/org/repo.git', 'a user name alone is no secret');
    assert.deepEqual(stored.request.scorers[0]?.scorer_config, {
      base_url: `https://judge:${REDACTED}@judge.test/v1`,
      model_name: 'm',
    });

    const revealed = revealRunInput(stored.request, key);
    assert.deepEqual(revealed.agent, urlRequest.agent, 'a sealed-looking plain value comes back as it was');
  });

  test('without a key: env values holding a URL password are redacted, their paths reported', () => {
    const stored = protectRunInput(urlRequest, undefined);
    assert.ok(!JSON.stringify(stored.request).includes('SECRET'));
    assert.deepEqual(stored.unsealed, [
      'agent.runtime_spec_json.env.DATABASE_URL',
      'agent.runtime_spec_json.env.MIRROR',
      'agent.runtime_spec_json.env.JDBC',
      'agent.runtime_spec_json.env.LOOKS_SEALED',
      'agent.runtime_spec_json.services[0].env.REPLICA',
    ]);
    assert.equal(stored.request.agent.runtime_spec_json.env.PUBLIC_URL, 'https://api.test/v1');
    assert.deepEqual(revealRunInput(stored.request, undefined), stored.request);
  });

  test('AGENTBENCH_SECRETS_KEY: hex or base64 of 32 bytes; errors never show the value', () => {
    const key = randomBytes(32);
    assert.deepEqual(parseSecretsKey(key.toString('hex')), key);
    assert.deepEqual(parseSecretsKey(key.toString('base64')), key);
    assert.equal(loadConfig({}).secretsKey, undefined);
    for (const bad of ['short-SECRET', randomBytes(16).toString('base64')]) {
      assert.throws(
        () => loadConfig({ AGENTBENCH_SECRETS_KEY: bad }),
        (err: unknown) => err instanceof ConfigError && !err.message.includes(bad),
      );
    }
  });
});
