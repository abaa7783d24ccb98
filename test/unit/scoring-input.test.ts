import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { judgedCaseInput, scorerFromEvaluator, type EvaluatorRow } from '../../src/domain/scoring-input';

const row: EvaluatorRow = {
  id: 7,
  evaluator_key: 'task_success',
  name: 'Task success',
  prompt_template: 'Q: {{data_item.input}}',
  base_url: 'https://judge.example/v1/chat/completions',
  model_name: 'judge-1',
  api_style: 'openai',
  api_key: 'sk-test',
};

describe('scoring input', () => {
  test('an evaluator row becomes the scorer the platform message lists for it (§2.4)', () => {
    assert.deepEqual(scorerFromEvaluator(row), {
      id: 7,
      scorer_key: 'task_success',
      name: 'Task success',
      scorer_config: {
        prompt_template: 'Q: {{data_item.input}}',
        base_url: 'https://judge.example/v1/chat/completions',
        model_name: 'judge-1',
        api_style: 'openai',
        api_key: 'sk-test',
      },
    });
  });

  test('a blank evaluator name falls back to its key (§7.4), as the message parser does', () => {
    assert.equal(scorerFromEvaluator({ ...row, name: '  ' }).name, 'task_success');
  });

  test("a case's data item as the judge prompt sees it; rows without trace_id or reference_trajectory get null", () => {
    const fromRows = { data_item_id: 3, user_input: 'q', session_jsonl: '[]', reference_output: { a: 1 } };
    assert.deepEqual(judgedCaseInput(fromRows), {
      dataItemId: 3,
      userInput: 'q',
      sessionJsonl: '[]',
      referenceTrajectory: null,
      referenceOutput: { a: 1 },
      traceId: null,
    });
    assert.deepEqual(judgedCaseInput({ ...fromRows, reference_trajectory: [{ step: 1 }], trace_id: 'abc' }), {
      dataItemId: 3,
      userInput: 'q',
      sessionJsonl: '[]',
      referenceTrajectory: [{ step: 1 }],
      referenceOutput: { a: 1 },
      traceId: 'abc',
    });
  });
});
