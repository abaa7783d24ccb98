import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { JudgeHttpRequest } from '../../src/domain/judge-score';
import {
  ConnectionError,
  HTTPError,
  InvalidURL,
  JSONDecodeError,
  ReadTimeout,
} from '../../src/scoring/errors';
import { callLlmJudge, type JudgeCallOptions } from '../../src/scoring/llm-judge-client';
import { openAiReply, startLlmJudgeServer, type LlmJudgeServer } from '../support/llm-judge-server';

let judge: LlmJudgeServer;
before(async () => {
  judge = await startLlmJudgeServer();
});
after(async () => {
  await judge.close();
});

const options = (overrides: Partial<JudgeCallOptions> = {}): JudgeCallOptions => ({
  connectTimeoutSeconds: 2,
  readTimeoutSeconds: 5,
  maxRetries: 2,
  retryBackoffSeconds: 0.01,
  ...overrides,
});

const requestTo = (path: string): JudgeHttpRequest => ({
  url: `${judge.origin}${path}`,
  headers: { 'Content-Type': 'application/json', Authorization: 'Bearer sk-client-test' },
  body: { model: 'm', messages: [{ role: 'user', content: 'hi' }] },
});

async function waitFor(what: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

describe('callLlmJudge', () => {
  test('POSTs the JSON body with the given headers and returns the parsed response', async () => {
    judge.script('/ok', { json: openAiReply('{"score":1}') });
    const body = await callLlmJudge(requestTo('/ok'), options());
    assert.deepEqual(body, openAiReply('{"score":1}'));
    const [seen] = judge.requestsTo('/ok');
    assert.equal(seen?.method, 'POST');
    assert.equal(seen?.headers['content-type'], 'application/json');
    assert.equal(seen?.headers.authorization, 'Bearer sk-client-test');
    assert.deepEqual(JSON.parse(seen?.body ?? ''), requestTo('/ok').body);
  });

  test('429 then 200: one retry', async () => {
    judge.script('/429-once', { status: 429, json: { error: 'slow down' } }, { json: { fine: true } });
    const retries: number[] = [];
    const body = await callLlmJudge(
      requestTo('/429-once'),
      options({ onRetry: ({ failedAttempt }) => retries.push(failedAttempt) }),
    );
    assert.deepEqual(body, { fine: true });
    assert.equal(judge.requestsTo('/429-once').length, 2);
    assert.deepEqual(retries, [1]);
  });

  test('retryable statuses are retried max_retries times with exponential backoff, then HTTPError', async () => {
    judge.script('/503', { status: 503, text: 'unavailable' });
    const delays: number[] = [];
    const started = Date.now();
    await assert.rejects(
      callLlmJudge(
        requestTo('/503'),
        options({ retryBackoffSeconds: 0.05, onRetry: ({ delayMs }) => delays.push(delayMs) }),
      ),
      (err: unknown) => err instanceof HTTPError && err.status === 503 && err.name === 'HTTPError',
    );
    assert.equal(judge.requestsTo('/503').length, 3);
    assert.deepEqual(delays, [50, 100]);
    assert.ok(Date.now() - started >= 150);
  });

  test('max_retries 0: a single attempt', async () => {
    judge.script('/500', { status: 500, text: 'boom' });
    await assert.rejects(callLlmJudge(requestTo('/500'), options({ maxRetries: 0 })), HTTPError);
    assert.equal(judge.requestsTo('/500').length, 1);
  });

  test('non-retryable statuses fail at once; the error body excerpt never carries the key', async () => {
    judge.script('/401', { status: 401, json: { error: 'bad key sk-client-test' } });
    await assert.rejects(callLlmJudge(requestTo('/401'), options()), (err: unknown) => {
      assert.ok(err instanceof HTTPError);
      assert.equal(err.status, 401);
      assert.equal(err.retryable, false);
      assert.ok(!err.message.includes('sk-client-test'), err.message);
      return true;
    });
    assert.equal(judge.requestsTo('/401').length, 1);
  });

  test('the excerpt drops the value of every secret-named header, not only Authorization', async () => {
    judge.script('/403', { status: 403, json: { error: 'key ak-header-test / tok-header-test refused' } });
    const req = requestTo('/403');
    const headers = { ...req.headers, 'x-api-key': 'ak-header-test', 'X-Judge-Token': 'tok-header-test' };
    await assert.rejects(callLlmJudge({ ...req, headers }, options()), (err: unknown) => {
      assert.ok(err instanceof HTTPError);
      assert.ok(!err.message.includes('header-test'), err.message);
      return true;
    });
  });

  test('read timeout: ReadTimeout after every attempt timed out', async () => {
    judge.script('/hang-read', 'hang');
    await assert.rejects(
      callLlmJudge(requestTo('/hang-read'), options({ readTimeoutSeconds: 0.2, maxRetries: 1 })),
      (err: unknown) => err instanceof ReadTimeout && err.name === 'ReadTimeout',
    );
    assert.equal(judge.requestsTo('/hang-read').length, 2);
  });

  test('connection refused: ConnectionError, retried', async () => {
    const closed = await startLlmJudgeServer();
    const url = `${closed.origin}/gone`;
    await closed.close();
    const retries: string[] = [];
    await assert.rejects(
      callLlmJudge(
        { ...requestTo('/'), url },
        options({ maxRetries: 1, onRetry: ({ error }) => retries.push(error.name) }),
      ),
      ConnectionError,
    );
    assert.deepEqual(retries, ['ConnectionError']);
  });

  test('a 2xx body that is not JSON: JSONDecodeError, not retried', async () => {
    judge.script('/not-json', { text: '<html>hello</html>' });
    await assert.rejects(callLlmJudge(requestTo('/not-json'), options()), JSONDecodeError);
    assert.equal(judge.requestsTo('/not-json').length, 1);
  });

  test('an unusable base_url: InvalidURL without any request', async () => {
    await assert.rejects(callLlmJudge({ ...requestTo('/'), url: 'judge.example/v1' }, options()), InvalidURL);
    await assert.rejects(
      callLlmJudge({ ...requestTo('/'), url: 'ftp://judge.example' }, options()),
      InvalidURL,
    );
  });

  test('abort: rejects with the signal reason and closes the connection of the request in flight', async () => {
    judge.script('/hang-abort', 'hang');
    const before = judge.abandonedHangs();
    const controller = new AbortController();
    const call = callLlmJudge(
      requestTo('/hang-abort'),
      options({ readTimeoutSeconds: 0, signal: controller.signal }),
    );
    await waitFor('the request to arrive', () => judge.requestsTo('/hang-abort').length === 1);
    const reason = new Error('stop');
    controller.abort(reason);
    await assert.rejects(call, (err: unknown) => err === reason);
    await waitFor('the server to see the connection close', () => judge.abandonedHangs() === before + 1);
  });

  test('abort during the backoff pause ends the call at once', async () => {
    judge.script('/503-slow-backoff', { status: 503, text: 'unavailable' });
    const controller = new AbortController();
    const reason = new Error('cancelled');
    const started = Date.now();
    await assert.rejects(
      callLlmJudge(
        requestTo('/503-slow-backoff'),
        options({
          retryBackoffSeconds: 30,
          signal: controller.signal,
          onRetry: () => controller.abort(reason),
        }),
      ),
      (err: unknown) => err === reason,
    );
    assert.ok(Date.now() - started < 5_000);
    assert.equal(judge.requestsTo('/503-slow-backoff').length, 1);
  });
});
