import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SecretRedactor } from '../../src/report/report-redaction';
import {
  clipExcerpt,
  countCodePoints,
  excerptOf,
  firstCodePoints,
  lastCodePoints,
} from '../../src/report/text-excerpt';

describe('text excerpts', () => {
  test('count and cut by code points, never inside a surrogate pair', () => {
    const s = 'a😀b😀c';
    assert.equal(countCodePoints(s), 5);
    assert.equal(firstCodePoints(s, 2), 'a😀');
    assert.equal(lastCodePoints(s, 2), '😀c');
    assert.equal(firstCodePoints(s, 0), '');
    assert.equal(lastCodePoints(s, 99), s);
  });

  test('a short text is kept whole', () => {
    assert.deepEqual(clipExcerpt(excerptOf('hello'), 10), { head: 'hello', tail: '', omitted: 0 });
    assert.deepEqual(clipExcerpt(excerptOf('hello'), 3, 2), { head: 'hello', tail: '', omitted: 0 });
  });

  test('a long text keeps head and tail and counts the rest', () => {
    assert.deepEqual(clipExcerpt(excerptOf('0123456789'), 3), { head: '012', tail: '', omitted: 7 });
    assert.deepEqual(clipExcerpt(excerptOf('0123456789'), 3, 2), { head: '012', tail: '89', omitted: 5 });
  });

  test('an excerpt cut by the loader keeps its gap', () => {
    assert.deepEqual(clipExcerpt({ head: 'abc', tail: 'xyz', totalChars: 100 }, 10, 10), {
      head: 'abc',
      tail: 'xyz',
      omitted: 94,
    });
    assert.deepEqual(clipExcerpt({ head: 'abcdef', tail: '', totalChars: 100 }, 2), {
      head: 'ab',
      tail: '',
      omitted: 98,
    });
  });
});

describe('SecretRedactor', () => {
  const key = 'sk-live-0123456789abcdef';
  const r = new SecretRedactor([key, 'short', '']);

  test('replaces known keys anywhere, and values of secret-named fields', () => {
    assert.equal(r.text(`calling judge with ${key}!`), 'calling judge with [REDACTED]!');
    assert.equal(
      r.text('{"api_key": "other-key-value", "model": "m"}'),
      '{"api_key": "[REDACTED]", "model": "m"}',
    );
    assert.equal(r.text('{"Authorization":"Bearer abc\\"def"}'), '{"Authorization":"[REDACTED]"}');
    assert.equal(r.text('password=hunter22 next'), 'password=[REDACTED] next');
    assert.equal(r.text('Authorization: Bearer abc.def'), 'Authorization: [REDACTED]');
    // Too short to search for as a key: ordinary words stay.
    assert.equal(r.text('a short text'), 'a short text');
  });

  test('a key cut at an excerpt boundary leaves none of its characters', () => {
    const cut = r.excerpt({
      head: `start ${key.slice(0, 10)}`,
      tail: `${key.slice(14)} end`,
      totalChars: 1000,
    });
    assert.equal(cut.head, 'start [REDACTED]');
    assert.equal(cut.tail, '[REDACTED] end');
    assert.equal(cut.totalChars, 1000);
  });

  test('a whole excerpt is redacted as one text and its length follows', () => {
    const whole = r.excerpt(excerptOf(`x ${key} y`));
    assert.deepEqual(whole, excerptOf('x [REDACTED] y'));
  });
});
