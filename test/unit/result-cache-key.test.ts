import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
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
