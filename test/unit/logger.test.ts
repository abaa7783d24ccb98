import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../../src/logger';

const R = '[REDACTED]';

/** A real logger writing into memory: the raw JSON text of each line and its parsed form. */
function capture() {
  const raw: string[] = [];
  const log = createLogger({
    level: 'debug',
    destination: {
      write(chunk: string) {
        for (const line of chunk.split('\n')) if (line.trim()) raw.push(line);
      },
    },
  });
  const last = () => JSON.parse(raw.at(-1) ?? '{}') as Record<string, unknown>;
  return { log, raw, last };
}

describe('logger: pattern-based redaction of real pino output', () => {
  test('secret-named keys at any depth, whatever their spelling; identifiers and counts stay', () => {
    const { log, raw, last } = capture();
    log.info(
      {
        code: 'X',
        scorer: {
          scorer_key: 'task_success',
          scorer_config: { api_key: 'sk-1', access_token: 'tok-2', model_name: 'm', max_tokens: 512 },
        },
        deep: {
          a: { b: { c: { d: { client_secret: 'cs-3', refreshToken: 'rt-4', DB_PASSWORD: 'pw-5' } } } },
        },
        headers: { Authorization: 'Bearer ab-6', 'x-api-key': 'xk-7', 'content-type': 'application/json' },
        apiKeys: ['k-8', 'k-9'],
        usage: { total_tokens: 42 },
        token: 7,
      },
      'scored',
    );
    const line = raw.at(-1) ?? '';
    for (const s of ['sk-1', 'tok-2', 'cs-3', 'rt-4', 'pw-5', 'ab-6', 'xk-7', 'k-8', 'k-9']) {
      assert.ok(!line.includes(s), `${s} in ${line}`);
    }
    const out = last();
    assert.deepEqual(out.scorer, {
      scorer_key: 'task_success',
      scorer_config: { api_key: R, access_token: R, model_name: 'm', max_tokens: 512 },
    });
    assert.deepEqual(out.headers, { Authorization: R, 'x-api-key': R, 'content-type': 'application/json' });
    assert.deepEqual(out.usage, { total_tokens: 42 });
    assert.equal(out.token, 7, 'a number under a secret-named key is not a credential');
    assert.equal(out.code, 'X');
  });

  test('values: bearer tokens, URL query secrets and userinfo, key=value text — in fields and the message', () => {
    const { log, raw, last } = capture();
    log.warn(
      {
        url: 'https://api.test/v1/x?api_key=qk-1&q=tokyo',
        dsn: 'postgres://app:pw-2@db:5432/app',
        note: 'sent Bearer eyJhbGciOiJIUzI1NiJ9.payload-3 upstream',
        detail: 'retry with password=pw-4 failed',
      },
      'GET %s failed with token: %s',
      'https://api.test/cb?access_token=qt-5&page=2',
      'lit-6',
    );
    const line = raw.at(-1) ?? '';
    for (const s of ['qk-1', 'pw-2', 'payload-3', 'pw-4', 'qt-5', 'lit-6'])
      assert.ok(!line.includes(s), `${s} in ${line}`);
    const out = last();
    assert.equal(out.url, `https://api.test/v1/x?api_key=${R}&q=tokyo`);
    assert.equal(out.dsn, `postgres://app:${R}@db:5432/app`);
    assert.equal(out.note, `sent Bearer ${R} upstream`);
    assert.equal(out.detail, `retry with password=${R} failed`);
    assert.equal(out.msg, `GET https://api.test/cb?access_token=${R}&page=2 failed with token: ${R}`);
  });

  test('child bindings and errors are redacted too; an error keeps its type and stack', () => {
    const { log, raw, last } = capture();
    const child = log
      .child({ run: { workflow_id: 'wf-1', secret: 's-1' } })
      .child({ case: { password: 'cp-5' } });
    const err = Object.assign(
      new Error('judge call to https://j.test/v1?key=ek-2 failed: Authorization: Bearer eb-3'),
      {
        password: 'ep-4',
      },
    );
    child.error({ err, code: 'E_EVALUATOR_CALL_FAILED' }, 'judge failed');
    const line = raw.at(-1) ?? '';
    for (const s of ['s-1', 'ek-2', 'eb-3', 'ep-4', 'cp-5']) assert.ok(!line.includes(s), `${s} in ${line}`);
    const out = last();
    assert.deepEqual(out.run, { workflow_id: 'wf-1', secret: R });
    assert.deepEqual(out.case, { password: R }, 'a grandchild keeps both bindings, redacted');
    const e = out.err as Record<string, unknown>;
    assert.equal(e.type, 'Error');
    assert.equal(e.message, `judge call to https://j.test/v1?key=${R} failed: Authorization: ${R}`);
    assert.match(String(e.stack), /^Error: judge call/);
    assert.equal(e.password, R);
  });

  test('an error as the first argument, a circular object and plain text without secrets', () => {
    const { log, raw, last } = capture();
    log.error(new Error('boom token=t-1'));
    assert.equal((last().err as Record<string, unknown>).message, `boom token=${R}`);
    assert.ok(!raw.at(-1)?.includes('t-1'), 'nowhere in the line, its stack included');
    const loop: Record<string, unknown> = { name: 'a', auth: { token: 't-2' } };
    loop.self = loop;
    log.info(
      {
        loop,
        cause: Object.assign(new Error('upstream'), {
          config: { headers: { Authorization: 'Bearer t-3-long-enough' } },
        }),
      },
      'plain message: 3 cases, max_tokens=100',
    );
    const out = last();
    assert.deepEqual(out.loop, { name: 'a', auth: { token: R }, self: '[Circular]' });
    assert.equal(out.msg, 'plain message: 3 cases, max_tokens=100');
    const cause = out.cause as Record<string, unknown>;
    assert.equal(cause.message, 'upstream', 'an error under another key is serialized too');
    assert.deepEqual(cause.config, { headers: { Authorization: R } });
    for (const secret of ['t-2', 't-3-long-enough'])
      assert.ok(!raw.at(-1)?.includes(secret), `${secret} nowhere in the line`);
  });
});
