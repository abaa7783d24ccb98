import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  buildEvaluatorPromptContext,
  buildJudgeRequest,
  bucketScore,
  decideScoring,
  extractJudgeVerdict,
  judgeApiStyle,
  judgeAttempts,
  judgeResponseContent,
  judgeRetryDelayMs,
  renderJudgePrompt,
  resolveJudgeCallSettings,
  type EvaluatorSettings,
  type JudgeConfig,
} from '../../src/domain/judge-score';
import { TemplateError } from '../../src/domain/template';
import { caseInput, caseRecord } from '../support/judge-fixtures';

const fullConfig = {
  base_url: 'https://judge.example/v1/chat/completions',
  api_key: 'sk-test',
  model_name: 'judge-model',
  prompt_template: 'Output: {{run.output}}',
  api_style: 'openai',
};

const judge = (overrides: Partial<JudgeConfig> = {}): JudgeConfig => ({
  baseUrl: 'https://judge.example/v1/chat/completions/',
  apiKey: 'sk-test',
  modelName: 'judge-model',
  promptTemplate: 'p',
  apiStyle: 'openai',
  ...overrides,
});

describe('decideScoring (§7.2 steps 1–2)', () => {
  for (const status of ['failed', 'timeout', 'canceled', 'running']) {
    test(`case status ${status} → −1 E_SCORE_DEFAULT_RUN_CASE_FAILED without a call`, () => {
      assert.deepEqual(decideScoring(status, fullConfig), {
        kind: 'default',
        score: -1,
        reason: 'E_SCORE_DEFAULT_RUN_CASE_FAILED',
        rawResult: { source: 'default' },
      });
    });
  }

  for (const key of ['base_url', 'api_key', 'model_name', 'prompt_template'] as const) {
    for (const value of [undefined, '', '   ', 42]) {
      test(`${key}=${JSON.stringify(value)} → −1 E_SCORE_DEFAULT_EVALUATOR_CONFIG_MISSING`, () => {
        const config: Record<string, unknown> = { ...fullConfig, [key]: value };
        if (value === undefined) delete config[key];
        assert.deepEqual(decideScoring('success', config), {
          kind: 'default',
          score: -1,
          reason: 'E_SCORE_DEFAULT_EVALUATOR_CONFIG_MISSING',
          rawResult: { source: 'default' },
        });
      });
    }
  }

  test('a complete config on a successful case is a call, values trimmed', () => {
    const decision = decideScoring('success', {
      ...fullConfig,
      api_key: ' sk-test\n',
      api_style: ' Anthropic ',
    });
    assert.deepEqual(decision, {
      kind: 'call',
      judge: {
        baseUrl: fullConfig.base_url,
        apiKey: 'sk-test',
        modelName: 'judge-model',
        promptTemplate: 'Output: {{run.output}}',
        apiStyle: 'anthropic',
      },
    });
  });

  test('api_style: only "anthropic" (any case) is Anthropic; default OpenAI', () => {
    assert.equal(judgeApiStyle('ANTHROPIC'), 'anthropic');
    for (const style of [undefined, null, '', 'openai', 'azure', 3])
      assert.equal(judgeApiStyle(style), 'openai');
  });
});

describe('buildJudgeRequest (§7.3)', () => {
  test('OpenAI style: URL as given minus trailing slashes, bearer header, json_object response format', () => {
    assert.deepEqual(
      buildJudgeRequest(judge({ baseUrl: 'https://judge.example/v1/chat/completions//' }), 'PROMPT'),
      {
        url: 'https://judge.example/v1/chat/completions',
        headers: { 'Content-Type': 'application/json', Authorization: 'Bearer sk-test' },
        body: {
          model: 'judge-model',
          temperature: 0,
          messages: [
            { role: 'system', content: 'Return JSON only: {"score":0|0.5|1,"reason":"..."}' },
            { role: 'user', content: 'PROMPT' },
          ],
          response_format: { type: 'json_object' },
        },
      },
    );
  });

  test('Anthropic style: x-api-key and bearer, anthropic-version, max_tokens 512, no system message', () => {
    assert.deepEqual(
      buildJudgeRequest(judge({ apiStyle: 'anthropic', baseUrl: 'https://a.example/v1/messages/' }), 'P'),
      {
        url: 'https://a.example/v1/messages',
        headers: {
          'Content-Type': 'application/json',
          'x-api-key': 'sk-test',
          Authorization: 'Bearer sk-test',
          'anthropic-version': '2023-06-01',
        },
        body: {
          model: 'judge-model',
          max_tokens: 512,
          temperature: 0,
          messages: [{ role: 'user', content: 'P' }],
        },
      },
    );
  });
});

describe('judgeResponseContent', () => {
  test('OpenAI: choices[0].message.content when a string', () => {
    assert.equal(
      judgeResponseContent('openai', { choices: [{ message: { content: '{"score":1}' } }] }),
      '{"score":1}',
    );
    assert.equal(judgeResponseContent('openai', { choices: [{ message: { content: null } }] }), null);
    assert.equal(judgeResponseContent('openai', { choices: [] }), null);
    assert.equal(judgeResponseContent('openai', [1, 2]), null);
    assert.equal(judgeResponseContent('openai', 'text'), null);
  });

  test('Anthropic: the first content item with a string text', () => {
    const body = {
      content: [
        { type: 'thinking', thinking: '…' },
        { type: 'text', text: 'first' },
        { type: 'text', text: 'second' },
      ],
    };
    assert.equal(judgeResponseContent('anthropic', body), 'first');
    assert.equal(judgeResponseContent('anthropic', { content: [{ type: 'text', text: 7 }] }), null);
    assert.equal(judgeResponseContent('anthropic', { content: 'flat' }), null);
  });
});

describe('extractJudgeVerdict (§7.3 bucketing and reason codes)', () => {
  test('no text or blank text → E_EVALUATOR_EMPTY_CONTENT', () => {
    for (const content of [null, '', ' \n\t']) {
      assert.deepEqual(extractJudgeVerdict(content), { score: -1, reason: 'E_EVALUATOR_EMPTY_CONTENT' });
    }
  });

  test('not JSON → E_EVALUATOR_INVALID_JSON with the first 200 characters', () => {
    const content = `score: 1 ${'x'.repeat(300)}`;
    assert.deepEqual(extractJudgeVerdict(content), {
      score: -1,
      reason: `E_EVALUATOR_INVALID_JSON: ${content.slice(0, 200)}`,
    });
    assert.deepEqual(extractJudgeVerdict('```json\n{"score":1}\n```').score, -1);
  });

  test('missing or null score → E_EVALUATOR_SCORE_MISSING: <reason>', () => {
    assert.deepEqual(extractJudgeVerdict('{"reason":"looks fine"}'), {
      score: -1,
      reason: 'E_EVALUATOR_SCORE_MISSING: looks fine',
    });
    assert.deepEqual(extractJudgeVerdict('{"score":null}'), {
      score: -1,
      reason: 'E_EVALUATOR_SCORE_MISSING: no reason provided',
    });
    assert.deepEqual(extractJudgeVerdict('[1]'), {
      score: -1,
      reason: 'E_EVALUATOR_SCORE_MISSING: no reason provided',
    });
  });

  test('non-numeric score → E_EVALUATOR_SCORE_INVALID: <reason>', () => {
    for (const score of ['"high"', '{}', '[0.5]', 'true', '""']) {
      assert.deepEqual(extractJudgeVerdict(`{"score":${score},"reason":"r"}`), {
        score: -1,
        reason: 'E_EVALUATOR_SCORE_INVALID: r',
      });
    }
  });

  test('reason defaults to "no reason provided" when absent or falsy; non-strings become JSON', () => {
    for (const reason of ['', 'null', '0', 'false', '[]', '{}']) {
      const content = reason === '' ? '{"score":1}' : `{"score":1,"reason":${reason}}`;
      assert.deepEqual(extractJudgeVerdict(content), { score: 1, reason: 'no reason provided' });
    }
    assert.deepEqual(extractJudgeVerdict('{"score":1,"reason":{"a":1}}'), { score: 1, reason: '{"a":1}' });
  });

  test('0, 0.5 and 1 kept; others bucketed at 0.9 and 0.6; numeric strings count', () => {
    const cases: Array<[string, number]> = [
      ['0', 0],
      ['0.5', 0.5],
      ['1', 1],
      ['1.0', 1],
      ['0.93', 1],
      ['0.9', 1],
      ['7', 1],
      ['0.89', 0.5],
      ['0.7', 0.5],
      ['0.6', 0.5],
      ['0.59', 0],
      ['0.2', 0],
      ['-3', 0],
      ['"0.95"', 1],
      ['" 0.7 "', 0.5],
    ];
    for (const [score, expected] of cases) {
      assert.deepEqual(
        extractJudgeVerdict(`{"score":${score},"reason":"ok"}`),
        { score: expected, reason: 'ok' },
        score,
      );
    }
    assert.equal(bucketScore(0.5), 0.5);
  });
});

describe('resolveJudgeCallSettings (§7.3 effective values)', () => {
  const env: EvaluatorSettings = {
    connectTimeoutSeconds: 15,
    readTimeoutSeconds: 90,
    maxRetries: 2,
    retryBackoffSeconds: 1,
    scorerHardTimeoutSeconds: 120,
  };

  test('env values when scorer_config has none', () => {
    assert.deepEqual(resolveJudgeCallSettings({}, env), {
      connectTimeoutSeconds: 15,
      readTimeoutSeconds: 90,
      maxRetries: 2,
      retryBackoffSeconds: 1,
    });
  });

  test('env 0 means zero (the original fell back to its defaults)', () => {
    const zero = {
      ...env,
      connectTimeoutSeconds: 0,
      readTimeoutSeconds: 0,
      maxRetries: 0,
      retryBackoffSeconds: 0,
    };
    assert.deepEqual(resolveJudgeCallSettings({}, zero), {
      connectTimeoutSeconds: 0,
      readTimeoutSeconds: 0,
      maxRetries: 0,
      retryBackoffSeconds: 0,
    });
  });

  test('scorer_config overrides when non-blank and parseable, numbers or strings, 0 included', () => {
    assert.deepEqual(
      resolveJudgeCallSettings(
        {
          connect_timeout_seconds: '3',
          read_timeout_seconds: 2.5,
          max_retries: 0,
          retry_backoff_seconds: ' 0.25 ',
        },
        env,
      ),
      { connectTimeoutSeconds: 3, readTimeoutSeconds: 2.5, maxRetries: 0, retryBackoffSeconds: 0.25 },
    );
  });

  test('blank, unparseable or negative overrides fall back to env', () => {
    assert.deepEqual(
      resolveJudgeCallSettings(
        {
          connect_timeout_seconds: '',
          read_timeout_seconds: 'soon',
          max_retries: '1.5',
          retry_backoff_seconds: -1,
        },
        env,
      ),
      { connectTimeoutSeconds: 15, readTimeoutSeconds: 90, maxRetries: 2, retryBackoffSeconds: 1 },
    );
    assert.equal(resolveJudgeCallSettings({ max_retries: true }, env).maxRetries, 2);
  });

  test('attempts = max(1, max_retries + 1); backoff × 2^(attempt−1)', () => {
    assert.equal(judgeAttempts(0), 1);
    assert.equal(judgeAttempts(2), 3);
    assert.equal(judgeAttempts(-5), 1);
    assert.deepEqual(
      [1, 2, 3].map((n) => judgeRetryDelayMs(1.5, n)),
      [1500, 3000, 6000],
    );
    assert.equal(judgeRetryDelayMs(0, 3), 0);
  });
});

describe('evaluator prompt (§7.3, §6.4 evaluator_prompt)', () => {
  test('context carries data_item, run and tools', () => {
    assert.deepEqual(buildEvaluatorPromptContext(caseInput, caseRecord), {
      data_item: {
        id: 100,
        input: 'hello',
        session: '[{"type":"message"}]',
        trajectory: [{ step: 1, name: 'reference' }],
        output: { target: 'done' },
        trace_id: 'trace-1',
      },
      run: {
        output: { answer: 'done' },
        trajectory: [{ step: 1, name: 'actual' }],
        status: 'success',
        logs: 'case logs',
        latency_ms: 88,
      },
      tools: {},
    });
  });

  test('renders strings as is and everything else as pretty JSON; unknown paths throw', () => {
    assert.equal(
      renderJudgePrompt('{{data_item.input}} / {{run.latency_ms}} / {{run.output}}', caseInput, caseRecord),
      'hello / 88 / {\n  "answer": "done"\n}',
    );
    assert.throws(() => renderJudgePrompt('{{run.missing}}', caseInput, caseRecord), TemplateError);
  });
});
