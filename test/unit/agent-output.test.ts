import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAgentStdout } from '../../src/domain/agent-output';

describe('parseAgentStdout (§4.5)', () => {
  test('the recommended line: output and logs', () => {
    const r = parseAgentStdout('booting\n{"output": "4", "logs": "thought hard"}\n', '');
    assert.deepEqual(r, { output: '4', logsOverride: 'thought hard', stdoutTrajectory: null, usage: null });
  });

  test('the last JSON object line wins, scanning stdout then stderr from the end', () => {
    const r = parseAgentStdout(
      '{"output": "first"}\n{"output": "second"}',
      'warning: x\n{"output": "from stderr"}',
    );
    assert.equal(r.output, 'from stderr');
  });

  test('lines that start with [ or { but are not objects are skipped', () => {
    const r = parseAgentStdout('{"output": 1}\n[1, 2]\n{broken\n[INFO] done', '');
    assert.equal(r.output, 1);
  });

  test('leading whitespace on the JSON line is ignored', () => {
    assert.equal(parseAgentStdout('   {"output": "x"}   \r\n', '').output, 'x');
  });

  test('falls back to the whole text as one (multi-line) object', () => {
    const r = parseAgentStdout('{\n  "output": {"answer": "sunny"}\n}', '');
    assert.deepEqual(r.output, { answer: 'sunny' });
  });

  test('output key present wins, even when null', () => {
    assert.equal(
      parseAgentStdout('{"output": null, "choices": [{"message": {"content": "c"}}]}', '').output,
      null,
    );
  });

  test('OpenAI chat-completions shape → choices[0].message.content', () => {
    const stdout = JSON.stringify({
      id: 'x',
      choices: [{ index: 0, message: { role: 'assistant', content: 'hi' } }],
    });
    assert.equal(parseAgentStdout(stdout, '').output, 'hi');
  });

  test('otherwise the object itself', () => {
    assert.deepEqual(parseAgentStdout('{"answer": 42}', '').output, { answer: 42 });
    assert.deepEqual(parseAgentStdout('{"choices": []}', '').output, { choices: [] });
  });

  test('no JSON at all → {raw_stdout: stdout only}', () => {
    const r = parseAgentStdout('plain answer\n', 'some error');
    assert.deepEqual(r, {
      output: { raw_stdout: 'plain answer\n' },
      logsOverride: null,
      stdoutTrajectory: null,
      usage: null,
    });
  });

  test('a JSON array is not an object → raw_stdout', () => {
    assert.deepEqual(parseAgentStdout('[1,2,3]', '').output, { raw_stdout: '[1,2,3]' });
  });

  test('empty output', () => {
    assert.deepEqual(parseAgentStdout('', '').output, { raw_stdout: '' });
  });

  test('logs: only when truthy; non-strings become JSON', () => {
    assert.equal(parseAgentStdout('{"output": 1, "logs": ""}', '').logsOverride, null);
    assert.equal(parseAgentStdout('{"output": 1, "logs": []}', '').logsOverride, null);
    assert.equal(parseAgentStdout('{"output": 1, "logs": {}}', '').logsOverride, null);
    assert.equal(parseAgentStdout('{"output": 1, "logs": 0}', '').logsOverride, null);
    assert.equal(parseAgentStdout('{"output": 1, "logs": ["a", "b"]}', '').logsOverride, '["a","b"]');
    assert.equal(parseAgentStdout('{"output": 1, "logs": {"k": 1}}', '').logsOverride, '{"k":1}');
  });

  test('trajectory only when an array; usage only when an object', () => {
    const r = parseAgentStdout(
      '{"output": 1, "trajectory": [{"step": 1}], "usage": {"input_tokens": 3}}',
      '',
    );
    assert.deepEqual(r.stdoutTrajectory, [{ step: 1 }]);
    assert.deepEqual(r.usage, { input_tokens: 3 });
    const s = parseAgentStdout('{"output": 1, "trajectory": "x", "usage": [1]}', '');
    assert.equal(s.stdoutTrajectory, null);
    assert.equal(s.usage, null);
  });
});
