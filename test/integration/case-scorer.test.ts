import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { EvaluatorSettings } from '../../src/domain/judge-score';
import { createLogger } from '../../src/logger';
import type { ScorerDefinition } from '../../src/domain/scoring-input';
import { scoreCase, type ScoreCaseParams, type ScorerResult } from '../../src/scoring/case-scorer';
import {
  anthropicReply,
  openAiReply,
  startLlmJudgeServer,
  type LlmJudgeServer,
} from '../support/llm-judge-server';
import { caseInput, caseRecord } from '../support/judge-fixtures';

const API_KEY = 'sk-case-scorer-SECRET-4711';

let judge: LlmJudgeServer;
before(async () => {
  judge = await startLlmJudgeServer();
});
after(async () => {
  await judge.close();
});

const settings: EvaluatorSettings = {
  connectTimeoutSeconds: 2,
  readTimeoutSeconds: 5,
  maxRetries: 0,
  retryBackoffSeconds: 0,
  scorerHardTimeoutSeconds: 10,
};

let nextId = 1;
function scorer(path: string, config: Record<string, unknown> = {}): ScorerDefinition {
  const id = nextId++;
  return {
    id,
    scorer_key: `judge_${id}`,
    name: `Judge ${id}`,
    scorer_config: {
      base_url: `${judge.origin}${path}`,
      api_key: API_KEY,
      model_name: 'judge-model',
      prompt_template: 'Output: {{run.output}}',
      api_style: 'openai',
      ...config,
    },
  };
}

/** A logger whose JSON lines are kept, to check codes and that no secret is ever written. */
function capturingLogger() {
  const lines: string[] = [];
  const log = createLogger({
    level: 'trace',
    name: 'case-scorer-test',
    destination: { write: (s: string) => lines.push(s) },
  });
  return { log, lines, records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

async function score(
  scorers: ScorerDefinition[],
  overrides: Partial<ScoreCaseParams> = {},
): Promise<ScorerResult[]> {
  return scoreCase({ caseRecord, caseInput, scorers, settings, log: capturingLogger().log, ...overrides });
}

function only<T>(list: T[]): T {
  assert.equal(list.length, 1);
  return list[0] as T;
}

async function waitFor(what: string, check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

describe('scoreCase: OpenAI style', () => {
  test('exact request: POST to base_url as given, bearer key, system + user message, json_object', async () => {
    const reply = openAiReply('{"score":1,"reason":"correct"}');
    judge.script('/openai/v1/chat/completions', { json: reply });
    const s = scorer('/openai/v1/chat/completions/');
    const result = only(await score([s]));

    const seen = only(judge.requestsTo('/openai/v1/chat/completions'));
    assert.equal(seen.method, 'POST');
    assert.equal(seen.headers['content-type'], 'application/json');
    assert.equal(seen.headers.authorization, `Bearer ${API_KEY}`);
    assert.equal(seen.headers['x-api-key'], undefined);
    assert.deepEqual(JSON.parse(seen.body), {
      model: 'judge-model',
      temperature: 0,
      messages: [
        { role: 'system', content: 'Return JSON only: {"score":0|0.5|1,"reason":"..."}' },
        { role: 'user', content: 'Output: {\n  "answer": "done"\n}' },
      ],
      response_format: { type: 'json_object' },
    });

    assert.equal(result.scorerKey, s.scorer_key);
    assert.equal(result.evaluatorId, s.id);
    assert.equal(result.score, 1);
    assert.equal(result.reason, 'correct');
    assert.deepEqual(result.rawResult, { source: 'llm', response: reply });
    assert.ok(result.durationMs >= 0);
  });

  test('bucketing through the real call: 0.93 → 1, 0.7 → 0.5, 0.2 → 0 (scorers run concurrently)', async () => {
    judge.script('/bucket/0.93', { json: openAiReply('{"score":0.93,"reason":"a"}') });
    judge.script('/bucket/0.7', { json: openAiReply('{"score":0.7,"reason":"b"}') });
    judge.script('/bucket/0.2', { json: openAiReply('{"score":0.2,"reason":"c"}') });
    const results = await score([scorer('/bucket/0.93'), scorer('/bucket/0.7'), scorer('/bucket/0.2')]);
    assert.deepEqual(
      results.map((r) => [r.score, r.reason]),
      [
        [1, 'a'],
        [0.5, 'b'],
        [0, 'c'],
      ],
    );
  });

  test('verdict problems are −1 with their reason codes, still source llm', async () => {
    judge.script('/bad/json', { json: openAiReply('I think it is a 1') });
    judge.script('/bad/missing', { json: openAiReply('{"reason":"forgot the score"}') });
    judge.script('/bad/empty', { json: openAiReply('   ') });
    judge.script('/bad/null', { json: openAiReply(null) });
    judge.script('/bad/invalid', { json: openAiReply('{"score":"excellent","reason":"great"}') });
    const results = await score(
      ['/bad/json', '/bad/missing', '/bad/empty', '/bad/null', '/bad/invalid'].map((p) => scorer(p)),
    );
    assert.deepEqual(
      results.map((r) => [r.score, r.reason, (r.rawResult as { source: string }).source]),
      [
        [-1, 'E_EVALUATOR_INVALID_JSON: I think it is a 1', 'llm'],
        [-1, 'E_EVALUATOR_SCORE_MISSING: forgot the score', 'llm'],
        [-1, 'E_EVALUATOR_EMPTY_CONTENT', 'llm'],
        [-1, 'E_EVALUATOR_EMPTY_CONTENT', 'llm'],
        [-1, 'E_EVALUATOR_SCORE_INVALID: great', 'llm'],
      ],
    );
  });
});

describe('scoreCase: Anthropic style', () => {
  test('exact request: x-api-key, bearer, anthropic-version, max_tokens 512; first text item is the verdict', async () => {
    const reply = anthropicReply('{"score":0.5,"reason":"partly"}');
    judge.script('/anthropic/v1/messages', { json: reply });
    const result = only(await score([scorer('/anthropic/v1/messages', { api_style: 'Anthropic' })]));

    const seen = only(judge.requestsTo('/anthropic/v1/messages'));
    assert.equal(seen.method, 'POST');
    assert.equal(seen.headers['content-type'], 'application/json');
    assert.equal(seen.headers['x-api-key'], API_KEY);
    assert.equal(seen.headers.authorization, `Bearer ${API_KEY}`);
    assert.equal(seen.headers['anthropic-version'], '2023-06-01');
    assert.deepEqual(JSON.parse(seen.body), {
      model: 'judge-model',
      max_tokens: 512,
      temperature: 0,
      messages: [{ role: 'user', content: 'Output: {\n  "answer": "done"\n}' }],
    });
    assert.deepEqual([result.score, result.reason], [0.5, 'partly']);
    assert.deepEqual(result.rawResult, { source: 'llm', response: reply });
  });

  test('bucketing and reason codes', async () => {
    judge.script('/anthropic/0.93', { json: anthropicReply('{"score":0.93,"reason":"a"}') });
    judge.script('/anthropic/0.7', { json: anthropicReply('{"score":0.7,"reason":"b"}') });
    judge.script('/anthropic/0.2', { json: anthropicReply('{"score":0.2,"reason":"c"}') });
    judge.script('/anthropic/no-text', { json: { content: [{ type: 'tool_use', id: 't' }] } });
    judge.script('/anthropic/not-json', { json: anthropicReply('yes') });
    const style = { api_style: 'anthropic' };
    const results = await score(
      [
        '/anthropic/0.93',
        '/anthropic/0.7',
        '/anthropic/0.2',
        '/anthropic/no-text',
        '/anthropic/not-json',
      ].map((p) => scorer(p, style)),
    );
    assert.deepEqual(
      results.map((r) => [r.score, r.reason]),
      [
        [1, 'a'],
        [0.5, 'b'],
        [0, 'c'],
        [-1, 'E_EVALUATOR_EMPTY_CONTENT'],
        [-1, 'E_EVALUATOR_INVALID_JSON: yes'],
      ],
    );
  });
});

describe('scoreCase: sentinels without a call (§7.2)', () => {
  test('a case that did not succeed: −1 E_SCORE_DEFAULT_RUN_CASE_FAILED, no request', async () => {
    judge.script('/never', { json: openAiReply('{"score":1}') });
    for (const status of ['failed', 'timeout']) {
      const result = only(await score([scorer('/never')], { caseRecord: { ...caseRecord, status } }));
      assert.deepEqual(
        [result.score, result.reason, result.rawResult],
        [-1, 'E_SCORE_DEFAULT_RUN_CASE_FAILED', { source: 'default' }],
      );
    }
    assert.equal(judge.requestsTo('/never').length, 0);
  });

  test('incomplete config: −1 E_SCORE_DEFAULT_EVALUATOR_CONFIG_MISSING, no request', async () => {
    const result = only(await score([scorer('/never', { api_key: '' })]));
    assert.deepEqual(
      [result.score, result.reason, result.rawResult],
      [-1, 'E_SCORE_DEFAULT_EVALUATOR_CONFIG_MISSING', { source: 'default' }],
    );
    assert.equal(judge.requestsTo('/never').length, 0);
  });

  test('no scorers: one implicit task_success without config', async () => {
    const result = only(await score([]));
    assert.deepEqual(
      [result.scorerKey, result.evaluatorId, result.score, result.reason, result.rawResult],
      ['task_success', 0, -1, 'E_SCORE_DEFAULT_EVALUATOR_CONFIG_MISSING', { source: 'default' }],
    );
  });
});

describe('scoreCase: call failures and timeouts', () => {
  test('429 then 200: scored after one retry', async () => {
    judge.script(
      '/retry/429',
      { status: 429, json: { error: 'rate limited' } },
      { json: openAiReply('{"score":1,"reason":"ok"}') },
    );
    const result = only(await score([scorer('/retry/429', { max_retries: 2, retry_backoff_seconds: 0.01 })]));
    assert.deepEqual([result.score, result.reason], [1, 'ok']);
    assert.equal(judge.requestsTo('/retry/429').length, 2);
  });

  test('read timeout on every attempt: −1 call-failed ReadTimeout; the other scorers are unaffected', async () => {
    judge.script('/slow/read', 'hang');
    judge.script('/fast/ok', { json: openAiReply('{"score":1,"reason":"fine"}') });
    const { log, records } = capturingLogger();
    const results = await score(
      [
        scorer('/slow/read', { read_timeout_seconds: 0.2, max_retries: 1, retry_backoff_seconds: 0.01 }),
        scorer('/fast/ok'),
      ],
      { log },
    );
    const [slow, fast] = results;
    assert.deepEqual(
      [slow?.score, slow?.reason, slow?.rawResult],
      [-1, 'E_SCORE_DEFAULT_EVALUATOR_CALL_FAILED: ReadTimeout', { source: 'default' }],
    );
    assert.deepEqual([fast?.score, fast?.reason], [1, 'fine']);
    assert.equal(judge.requestsTo('/slow/read').length, 2);
    const failed = records().filter((r) => r.code === 'E_EVALUATOR_CALL_FAILED');
    assert.equal(failed.length, 1);
    assert.equal(failed[0]?.scorer_key, slow?.scorerKey);
  });

  test('hard timeout: −1 E_SCORE_DEFAULT_SCORER_TIMEOUT, the call is aborted, the other scorers are unaffected', async () => {
    judge.script('/hard/hang', 'hang');
    judge.script('/hard/ok', { json: openAiReply('{"score":0.5,"reason":"half"}') });
    const abandonedBefore = judge.abandonedHangs();
    const { log, records } = capturingLogger();
    const [hung, ok] = await score([scorer('/hard/hang', { read_timeout_seconds: 0 }), scorer('/hard/ok')], {
      log,
      settings: { ...settings, scorerHardTimeoutSeconds: 1 },
    });
    assert.deepEqual(
      [hung?.score, hung?.reason, hung?.rawResult],
      [-1, 'E_SCORE_DEFAULT_SCORER_TIMEOUT', { source: 'default', timeout: true }],
    );
    assert.ok((hung?.durationMs ?? 0) >= 990, `duration ${hung?.durationMs}`);
    assert.deepEqual([ok?.score, ok?.reason], [0.5, 'half']);
    await waitFor(
      'the judge to see the hung request abandoned',
      () => judge.abandonedHangs() === abandonedBefore + 1,
    );
    const timeouts = records().filter((r) => r.code === 'E_SCORER_TIMEOUT');
    assert.equal(timeouts.length, 1);
    assert.equal(timeouts[0]?.timeout_seconds, 1);
  });

  test('non-retryable HTTP error: −1 call-failed HTTPError after one request', async () => {
    judge.script('/http/400', { status: 400, json: { error: 'bad request' } });
    const result = only(await score([scorer('/http/400', { max_retries: 3 })]));
    assert.equal(result.reason, 'E_SCORE_DEFAULT_EVALUATOR_CALL_FAILED: HTTPError');
    assert.equal(judge.requestsTo('/http/400').length, 1);
  });

  test('prompt render error: −1 call-failed TemplateError, no request', async () => {
    const result = only(await score([scorer('/never', { prompt_template: '{{run.missing}}' })]));
    assert.equal(result.reason, 'E_SCORE_DEFAULT_EVALUATOR_CALL_FAILED: TemplateError');
    assert.equal(judge.requestsTo('/never').length, 0);
  });

  test("the caller's signal cancels: scoreCase rejects with its reason", async () => {
    judge.script('/cancel/hang', 'hang');
    const controller = new AbortController();
    const reason = new Error('activity cancelled');
    const pending = score([scorer('/cancel/hang', { read_timeout_seconds: 0 })], {
      signal: controller.signal,
    });
    await waitFor('the request to arrive', () => judge.requestsTo('/cancel/hang').length === 1);
    controller.abort(reason);
    await assert.rejects(pending, (err: unknown) => err === reason);
  });

  test('onProgress runs when scorers finish and before retries', async () => {
    judge.script('/progress/503', { status: 503, text: 'busy' }, { json: openAiReply('{"score":1}') });
    judge.script('/progress/ok', { json: openAiReply('{"score":1}') });
    let calls = 0;
    await score(
      [scorer('/progress/503', { max_retries: 1, retry_backoff_seconds: 0.01 }), scorer('/progress/ok')],
      {
        onProgress: () => calls++,
      },
    );
    assert.equal(calls, 3);
  });
});

describe('scoreCase: the original test_inspect_runner_score_payload', () => {
  test('the prompt carries data_item and run exactly; score 1.0 "ok" from source llm', async () => {
    judge.script('/payload', { json: openAiReply('{"score":1.0,"reason":"ok"}') });
    const template = [
      'id={{data_item.id}}',
      'input={{data_item.input}}',
      'session={{data_item.session}}',
      'reference_trajectory={{data_item.trajectory}}',
      'reference_output={{data_item.output}}',
      'trace_id={{data_item.trace_id}}',
      'output={{run.output}}',
      'trajectory={{run.trajectory}}',
      'status={{run.status}}',
      'logs={{run.logs}}',
      'latency={{run.latency_ms}}',
      'tools={{tools}}',
    ].join('\n');
    const result = only(await score([scorer('/payload', { prompt_template: template })]));
    assert.deepEqual(
      [result.score, result.reason, (result.rawResult as { source: string }).source],
      [1, 'ok', 'llm'],
    );

    const sent = JSON.parse(only(judge.requestsTo('/payload')).body) as {
      messages: Array<{ content: string }>;
    };
    assert.equal(
      sent.messages[1]?.content,
      [
        'id=100',
        'input=hello',
        'session=[{"type":"message"}]',
        'reference_trajectory=[\n  {\n    "step": 1,\n    "name": "reference"\n  }\n]',
        'reference_output={\n  "target": "done"\n}',
        'trace_id=trace-1',
        'output={\n  "answer": "done"\n}',
        'trajectory=[\n  {\n    "step": 1,\n    "name": "actual"\n  }\n]',
        'status=success',
        'logs=case logs',
        'latency=88',
        'tools={}',
      ].join('\n'),
    );
  });
});

describe('scoreCase: secrets', () => {
  test('the api key appears in no rawResult and no log line, whatever happens', async () => {
    judge.script('/secret/echo', {
      json: {
        ...(openAiReply('{"score":1,"reason":"ok"}') as object),
        echo: { api_key: API_KEY, Authorization: `Bearer ${API_KEY}` },
      },
    });
    judge.script('/secret/401', { status: 401, json: { error: `invalid key ${API_KEY}` } });
    judge.script('/secret/hang', 'hang');
    judge.script(
      '/secret/retry',
      { status: 500, text: `oops ${API_KEY}` },
      { json: openAiReply('{"score":0}') },
    );
    const { log, lines } = capturingLogger();
    const results = await score(
      [
        scorer('/secret/echo'),
        scorer('/secret/401'),
        scorer('/secret/hang', { read_timeout_seconds: 0.2 }),
        scorer('/secret/retry', { max_retries: 1, retry_backoff_seconds: 0.01 }),
      ],
      { log },
    );
    assert.deepEqual(
      results.map((r) => r.reason),
      [
        'ok',
        'E_SCORE_DEFAULT_EVALUATOR_CALL_FAILED: HTTPError',
        'E_SCORE_DEFAULT_EVALUATOR_CALL_FAILED: ReadTimeout',
        'no reason provided',
      ],
    );
    assert.ok(lines.length >= 3, `expected log lines, got ${lines.length}`);
    for (const line of lines) assert.ok(!line.includes(API_KEY), `log line leaks the key: ${line}`);
    for (const r of results)
      assert.ok(!JSON.stringify(r.rawResult).includes(API_KEY), 'rawResult leaks the key');
    assert.deepEqual((results[0]?.rawResult as { response: { echo: unknown } }).response.echo, {
      api_key: '[REDACTED]',
      Authorization: '[REDACTED]',
    });
  });
});
