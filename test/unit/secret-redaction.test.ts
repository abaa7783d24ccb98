import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  hasUrlSecret,
  isSecretName,
  redactSecrets,
  redactSecretText,
  redactUrl,
  REDACTED,
} from '../../src/domain/secret-redaction';
import { buildRuntimeSnapshot } from '../../src/domain/runtime-snapshot';
import { SecretRedactor } from '../../src/report/report-redaction';

describe('isSecretName: by pattern, not by list', () => {
  const secret = [
    'api_key',
    'apiKey',
    'APIKey',
    'x-api-key',
    'OPENAI_API_KEY',
    'key',
    'access_token',
    'accessToken',
    'refresh-token',
    'GITHUB_TOKEN',
    'client_secret',
    'AWS_SECRET_ACCESS_KEY',
    'password',
    'db.passwd',
    'credentials',
    'auth',
    'Authorization',
    'http.request.header.authorization',
    'Cookie',
    'private_key',
    'webhook_signature',
    'PGPASSWORD',
    'MYSQLPASSWD',
    'CLIENTSECRET',
  ];
  const notSecret = [
    'max_tokens',
    'maxTokens',
    'token_count',
    'llm.token_count.prompt',
    'prompt_tokens',
    'completion_tokens',
    'tokens',
    'tokenizer',
    'token_type',
    'auth_url',
    'password_file',
    'api_key_env',
    'token_limit',
    'key_name',
    'scorer_key',
    'agent_key',
    'cache_key',
    'monkey',
    'keyboard',
    'scorer_config',
    'model_name',
    'base_url',
  ];
  for (const name of secret) test(`${name} is secret`, () => assert.equal(isSecretName(name), true));
  for (const name of notSecret) test(`${name} is not`, () => assert.equal(isSecretName(name), false));
});

describe('redactSecrets', () => {
  test('numbers are never redacted: usage figures stay, whatever the key', () => {
    assert.deepEqual(
      redactSecrets({ token: 1024, max_tokens: 512, usage: { total_tokens: 9 }, token_count: '12' }),
      {
        token: 1024,
        max_tokens: 512,
        usage: { total_tokens: 9 },
        token_count: '12',
      },
    );
  });

  test('a list of strings under a secret key is redacted; objects under it are walked', () => {
    assert.deepEqual(redactSecrets({ api_keys: ['a', 'b'], auth: { type: 'bearer', token: 't' } }), {
      api_keys: [REDACTED, REDACTED],
      auth: { type: 'bearer', token: REDACTED },
    });
  });

  test('a __proto__ key (JSON.parse keeps it own) neither hides the map nor is lost', () => {
    const parsed = JSON.parse('{"__proto__": {"password": "p1"}, "password": "p2", "keep": "k"}') as Record<
      string,
      unknown
    >;
    const out = redactSecrets(parsed);
    assert.equal(
      JSON.stringify(out),
      `{"__proto__":{"password":"${REDACTED}"},"password":"${REDACTED}","keep":"k"}`,
    );
    assert.equal(Object.getPrototypeOf(out), Object.prototype, 'the copy’s prototype is untouched');
  });

  test('a map whose __proto__ assignment replaced its prototype is still walked (own properties only)', () => {
    const map: Record<string, unknown> = {};
    map['__proto__'] = { inherited: 'x' };
    map.password = 'clear';
    map.other = 'kept';
    const out = redactSecrets(map) as Record<string, unknown>;
    assert.deepEqual({ ...out }, { password: REDACTED, other: 'kept' });
    assert.equal(out.inherited, undefined, 'inherited keys are not copied');
  });

  test('URLs in strings lose secret query values and userinfo passwords', () => {
    assert.deepEqual(
      redactSecrets({
        url: 'https://api.test/v1/x?api_key=sk-1&q=tokyo&max_tokens=5',
        dsn: 'postgres://app:pw@db:5432/x',
        text: 'no url here',
      }),
      {
        url: `https://api.test/v1/x?api_key=${REDACTED}&q=tokyo&max_tokens=5`,
        dsn: `postgres://app:${REDACTED}@db:5432/x`,
        text: 'no url here',
      },
    );
  });

  test('runtime_snapshot_json: a scorer_config.access_token is redacted by pattern', () => {
    const snapshot = buildRuntimeSnapshot({
      runtimeSpecRaw: {},
      scorers: [{ id: 1, scorer_config: { access_token: 'tok-1', model_name: 'm', max_tokens: 100 } }],
      runCaseId: 1,
      generatedAtUnixSeconds: 1,
      sha256Hex: () => 'h',
    });
    assert.deepEqual(snapshot.scorers, [
      { id: 1, scorer_config: { access_token: REDACTED, model_name: 'm', max_tokens: 100 } },
    ]);
  });
});

describe('redactUrl and redactSecretText', () => {
  test('query values: encoded names, empty values, fragments, relative targets', () => {
    assert.equal(redactUrl('/v1?API%5FKEY=x&a=&token=#frag'), `/v1?API%5FKEY=${REDACTED}&a=&token=#frag`);
    assert.equal(redactUrl('api.test:443'), 'api.test:443');
  });

  test('text: JSON-ish, key=value, Authorization schemes, URLs; numbers and counts stay', () => {
    assert.equal(
      redactSecretText(
        'GET https://u:pw@api.test/v1?api_key=abc&q=1 failed; Authorization: Bearer xyz {"token": "t1", "max_tokens": "9"} token: 1024',
      ),
      `GET https://u:${REDACTED}@api.test/v1?api_key=${REDACTED}&q=1 failed; Authorization: ${REDACTED} {"token": "${REDACTED}", "max_tokens": "9"} token: 1024`,
    );
  });

  test('the report’s redactor applies the same pattern', () => {
    const redact = new SecretRedactor([]);
    assert.equal(
      redact.text('fetch http://x.test/a?access_token=tok-123&page=2 → 401'),
      `fetch http://x.test/a?access_token=${REDACTED}&page=2 → 401`,
    );
  });
});

describe('hasUrlSecret: a URL with a password is a secret whatever its name', () => {
  const secret = [
    'postgres://user:pass@host/db',
    'https://user:token@host',
    'redis://:pw@cache:6379/0',
    'mysql+pymysql://app:p%40ss@db/x',
    ' postgres://u:p@h/db ',
    'jdbc:postgresql://u:p@h:5432/db',
    '--db=postgres://u:p@h/db',
    'primary=https://a:b@one.test,replica=https://c:d@two.test',
  ];
  const notSecret = [
    '',
    'C',
    'en_US.UTF-8',
    'not a url @ all: really',
    'https://api.test/v1',
    'https://api.test/v1?q=a@b:c',
    'ssh://git@github.com/org/repo.git',
    'postgres://postgres@localhost/db',
    'http://user:@host',
    'user@example.com',
    'http://[::1',
  ];
  for (const value of secret)
    test(`${JSON.stringify(value)} is secret`, () => assert.equal(hasUrlSecret(value), true));
  for (const value of notSecret)
    test(`${JSON.stringify(value)} is not`, () => assert.equal(hasUrlSecret(value), false));
  test('called again, the same answer (no regex state kept between calls)', () => {
    for (let i = 0; i < 3; i++) assert.equal(hasUrlSecret('jdbc:postgresql://u:p@h/db'), true);
  });
});
