import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { authenticate } from '../../src/api/api-auth';
import { ApiError } from '../../src/api/api-errors';
import { parseApiTokens } from '../../src/config';

const settings = (allowAnonymous: boolean) => ({
  tokens: parseApiTokens('API_TOKENS', 'ci:writer-secret-0123456789'),
  readTokens: parseApiTokens('API_READ_TOKENS', 'dash:reader-secret-0123456789'),
  allowAnonymous,
});

const refused = (status: number, code: string) => (err: unknown) =>
  err instanceof ApiError && err.statusCode === status && err.code === code;

describe('API authentication', () => {
  test('a write token may write, a read token may only read (403 on a write)', () => {
    assert.deepEqual(
      authenticate(settings(false), {
        authorization: 'Bearer writer-secret-0123456789',
        remoteAddress: '10.0.0.1',
        write: true,
      }),
      { name: 'ci', canWrite: true },
    );
    assert.deepEqual(
      authenticate(settings(false), {
        authorization: 'Bearer reader-secret-0123456789',
        remoteAddress: '10.0.0.1',
        write: false,
      }),
      { name: 'dash', canWrite: false },
    );
    assert.throws(
      () =>
        authenticate(settings(false), {
          authorization: 'Bearer reader-secret-0123456789',
          remoteAddress: '10.0.0.1',
          write: true,
        }),
      refused(403, 'E_API_FORBIDDEN'),
    );
  });

  test('missing, malformed and unknown tokens are 401 with a Bearer challenge', () => {
    for (const authorization of [
      undefined,
      'Bearer',
      'Basic abc',
      'Bearer nope',
      'Bearer writer-secret-012345678',
    ]) {
      assert.throws(
        () => authenticate(settings(false), { authorization, remoteAddress: '127.0.0.1', write: false }),
        (err: unknown) =>
          err instanceof ApiError &&
          err.statusCode === 401 &&
          err.headers['www-authenticate']?.startsWith('Bearer') === true,
      );
    }
  });

  test('API_ALLOW_ANONYMOUS lets a loopback peer in without a token, never another address', () => {
    for (const remoteAddress of ['127.0.0.1', '::1', '::ffff:127.0.0.1']) {
      assert.equal(
        authenticate(settings(true), { authorization: undefined, remoteAddress, write: true }).name,
        'anonymous',
      );
    }
    for (const remoteAddress of ['10.1.2.3', '::ffff:10.1.2.3', '172.17.0.1', undefined]) {
      assert.throws(
        () => authenticate(settings(true), { authorization: undefined, remoteAddress, write: false }),
        refused(401, 'E_API_UNAUTHENTICATED'),
      );
    }
  });
});
