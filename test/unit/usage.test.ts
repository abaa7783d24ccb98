import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { extractUsage } from '../../src/domain/usage';

describe('extractUsage', () => {
  test('OpenAI shape: prompt/completion tokens, reported total kept', () => {
    assert.deepEqual(extractUsage({ prompt_tokens: 120, completion_tokens: 30, total_tokens: 151 }, null), {
      inputTokens: 120,
      outputTokens: 30,
      usageJson: { input_tokens: 120, output_tokens: 30, total_tokens: 151, token_source: 'agent_stdout' },
    });
  });

  test('Anthropic shape: input/output tokens, cache tokens counted as input, total computed', () => {
    const usage = {
      input_tokens: 10,
      output_tokens: 7,
      cache_creation_input_tokens: 100,
      cache_read_input_tokens: 5,
    };
    assert.deepEqual(extractUsage(usage, null), {
      inputTokens: 115,
      outputTokens: 7,
      usageJson: { input_tokens: 115, output_tokens: 7, total_tokens: 122, token_source: 'agent_stdout' },
    });
  });

  test('digit strings are counts; a missing side is 0', () => {
    assert.deepEqual(extractUsage({ output_tokens: '42' }, null).usageJson, {
      input_tokens: 0,
      output_tokens: 42,
      total_tokens: 42,
      token_source: 'agent_stdout',
    });
  });

  test('stdout wins over OTel; OTel used when stdout reports nothing usable', () => {
    assert.equal(
      extractUsage({ prompt_tokens: 1, completion_tokens: 2 }, { inputTokens: 50, outputTokens: 60 })
        .inputTokens,
      1,
    );
    for (const stdout of [null, undefined, 'usage', [1], {}, { prompt_tokens: -1, output_tokens: 1.5 }]) {
      assert.deepEqual(extractUsage(stdout, { inputTokens: 50, outputTokens: 60 }), {
        inputTokens: 50,
        outputTokens: 60,
        usageJson: { input_tokens: 50, output_tokens: 60, total_tokens: 110, token_source: 'otel' },
      });
    }
  });

  test('no source: columns stay NULL, usage_json keeps the original zeros', () => {
    assert.deepEqual(extractUsage(null, null), {
      inputTokens: null,
      outputTokens: null,
      usageJson: { input_tokens: 0, output_tokens: 0, total_tokens: 0 },
    });
  });
});
