import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_MAX_STEPS, DEFAULT_TASK_TIMEOUT_SECONDS, parseTaskLines } from '../../src/domain/batch-task';

const line = (task: object) => JSON.stringify(task);

describe('parseTaskLines', () => {
  test('given valid lines, blank lines and CRLF, then every task with defaults and its line number', () => {
    const text = [
      line({ task_id: 'c1', task_type: 'code', description: 'add', constraints: { code: 'print(1)' } }),
      '',
      `${line({ task_id: 7, task_type: 'web', description: 'read', expected_tools: ['browser'], max_steps: 3, timeout: 5 })}\r`,
    ].join('\n');
    const { tasks, errors } = parseTaskLines(text);
    assert.deepEqual(errors, []);
    assert.equal(tasks.length, 2);
    assert.deepEqual(tasks[0], {
      task_id: 'c1',
      task_type: 'code',
      description: 'add',
      expected_tools: [],
      max_steps: DEFAULT_MAX_STEPS,
      timeout: DEFAULT_TASK_TIMEOUT_SECONDS,
      constraints: { code: 'print(1)' },
      line: 1,
    });
    assert.equal(tasks[1]?.task_id, '7');
    assert.equal(tasks[1]?.line, 3);
    assert.equal(tasks[1]?.timeout, 5);
  });

  test('given bad lines, then each is reported with its number and the good ones are kept', () => {
    const text = [
      '{not json',
      line({ task_id: 'a', task_type: 'video', description: 'x' }),
      line({ task_id: '../etc', task_type: 'code', description: 'x' }),
      line({ task_id: 'ok', task_type: 'reasoning', description: 'x' }),
      line({ task_id: 'ok', task_type: 'code', description: 'again' }),
      line({ task_id: 'b', task_type: 'code', description: 'x', timeout: -1 }),
      '[1, 2]',
    ].join('\n');
    const { tasks, errors } = parseTaskLines(text);
    assert.deepEqual(
      tasks.map((t) => t.task_id),
      ['ok'],
    );
    assert.deepEqual(
      errors.map((e) => e.line),
      [1, 2, 3, 5, 6, 7],
    );
    assert.match(errors[0]?.message ?? '', /^not JSON/);
    assert.match(errors[1]?.message ?? '', /^task_type:/);
    assert.match(errors[2]?.message ?? '', /^task_id:/);
    assert.match(errors[3]?.message ?? '', /repeats the task of line 4/);
    assert.match(errors[4]?.message ?? '', /^timeout:/);
  });
});
