import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  cacheKeyEnv,
  normalizeDescription,
  resultCacheKey,
  type ResultCacheKeyInput,
} from '../../src/cache/result-cache-key';

const BASE: ResultCacheKeyInput = {
  taskType: 'code',
  description: 'Print the answer',
  constraints: { code: 'print(42)', limits: { a: 1, b: 2 } },
  imageId: 'sha256:aaa',
  runtimeSettings: { memory_mb: 512, model: 'm' },
};

describe('resultCacheKey', () => {
  test('given the same task written differently (blanks, key order), then the same key', () => {
    const same = resultCacheKey({
      ...BASE,
      description: '  Print   the\r\nanswer '.replace('\r\n', ' '),
      constraints: { limits: { b: 2, a: 1 }, code: 'print(42)' },
    });
    assert.equal(same, resultCacheKey(BASE));
    assert.match(same, /^[0-9a-f]{64}$/);
  });

  test('given any input that decides the result changed, then another key', () => {
    const key = resultCacheKey(BASE);
    for (const changed of [
      { taskType: 'web' },
      { description: 'Print the answer!' },
      { constraints: { code: 'print(43)', limits: { a: 1, b: 2 } } },
      { imageId: 'sha256:bbb' },
      { runtimeSettings: { memory_mb: 512, model: 'other' } },
    ]) {
      assert.notEqual(resultCacheKey({ ...BASE, ...changed }), key, JSON.stringify(changed));
    }
  });

  test('normalizeDescription keeps line structure and case', () => {
    assert.equal(normalizeDescription(' A  b \r\n  C\t\td '), 'A b\nC d');
    assert.equal(normalizeDescription('e\u0301'), '\u00e9');
  });
});

describe('cacheKeyEnv: the env of a key, without secrets', () => {
  const settings = (env: Record<string, string>) => ({
    taskType: 'code',
    description: 'Print the answer',
    constraints: { code: 'print(42)' },
    imageId: 'sha256:aaa',
    runtimeSettings: { env: cacheKeyEnv(env), memory_mb: 512 },
  });
  const plain = { LANG: 'C', WORKERS: '4', PUBLIC_URL: 'https://api.test/v1' };

  test('given only non-secret env besides secret-named, then the key it had before (pinned)', () => {
    const env = { ...plain, OPENAI_API_KEY: 'sk-1', GITHUB_TOKEN: 'ghp-1', DB_PASSWORD: 'pw' };
    assert.deepEqual(cacheKeyEnv(env), plain);
    // Computed with the former name regex (/KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL/i) of activities/task-case.ts.
    const before = 'f9b1320f241c24f3ae969628cc79d8478cf9d04b3a3eb040236c5d2c28caca5a';
    assert.equal(resultCacheKey(settings(env)), before);
    assert.equal(resultCacheKey(settings(plain)), before);
  });

  test('given a secret changed (by name, or a URL password), then the same key', () => {
    const key = resultCacheKey(settings({ ...plain, API_KEY: 'a', DATABASE_URL: 'postgres://u:p1@db/x' }));
    assert.equal(
      resultCacheKey(settings({ ...plain, API_KEY: 'b', DATABASE_URL: 'postgres://u:p2@db/x' })),
      key,
    );
    assert.equal(resultCacheKey(settings(plain)), key);
  });

  test('given a non-secret variable changed or added, then another key', () => {
    const key = resultCacheKey(settings(plain));
    const changes: Record<string, string>[] = [
      { WORKERS: '8' },
      { MAX_TOKENS: '100' },
      { CLONE: 'ssh://git@git.test/r.git' },
    ];
    for (const changed of changes) {
      assert.notEqual(resultCacheKey(settings({ ...plain, ...changed })), key, JSON.stringify(changed));
    }
  });

  test('names by the shared pattern: exempt words stay, secret words beyond the former regex go, run-together ones as before', () => {
    assert.deepEqual(
      cacheKeyEnv({
        MAX_TOKENS: '100',
        PASSWORD_FILE: '/run/secrets/pw',
        SESSION_COOKIE: 'c',
        GH_AUTH: 'a',
        PGPASSWORD: 'p',
        CLIENTSECRET: 's',
        AWS_ACCESS_KEY_ID: 'AKIA',
      }),
      { MAX_TOKENS: '100', PASSWORD_FILE: '/run/secrets/pw' },
    );
    assert.deepEqual(cacheKeyEnv(undefined), {});
  });
});
