import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  assembleCaseLogs,
  caseOutcome,
  CONTAINER_LOG_TAIL_CHARS,
  tailChars,
} from '../../src/domain/case-logs';

const FOOTER = '[inspect] eval_id=e1 sample_id=901';

const parts = {
  execStdout: 'out\n',
  execStderr: 'err\n',
  afterLogs: null,
  logsOverride: null,
  containerLogs: '',
  footer: FOOTER,
};

describe('assembleCaseLogs (§6.5)', () => {
  test('exec logs + footer', () => {
    assert.equal(assembleCaseLogs(parts), `out\n\nerr\n${FOOTER}`);
  });

  test('after-exec section when an after-command ran', () => {
    assert.equal(
      assembleCaseLogs({ ...parts, afterLogs: 'exported' }),
      `out\n\nerr\n\n[after-exec]\nexported\n${FOOTER}`,
    );
  });

  test('an empty after-command output still adds the section', () => {
    assert.equal(assembleCaseLogs({ ...parts, afterLogs: '' }), `out\n\nerr\n\n[after-exec]\n\n${FOOTER}`);
  });

  test('the agent-provided logs replace exec and after logs', () => {
    assert.equal(
      assembleCaseLogs({ ...parts, afterLogs: 'exported', logsOverride: 'agent says' }),
      `agent says\n${FOOTER}`,
    );
  });

  test('container section with the last 8000 characters', () => {
    const containerLogs = `${'a'.repeat(100)}${'b'.repeat(CONTAINER_LOG_TAIL_CHARS)}\n`;
    const logs = assembleCaseLogs({ ...parts, containerLogs });
    assert.equal(logs, `out\n\nerr\n\n[container]\n${'b'.repeat(CONTAINER_LOG_TAIL_CHARS)}\n${FOOTER}`);
  });

  test('blank container logs add no section', () => {
    assert.equal(assembleCaseLogs({ ...parts, containerLogs: ' \n ' }), `out\n\nerr\n${FOOTER}`);
  });

  test('whole string trimmed', () => {
    assert.equal(assembleCaseLogs({ ...parts, execStdout: '', execStderr: '', footer: '' }), '');
    assert.equal(assembleCaseLogs({ ...parts, execStdout: '  \n', execStderr: '' }), FOOTER);
  });
});

describe('tailChars', () => {
  test('short strings unchanged; long strings cut from the end', () => {
    assert.equal(tailChars('abc', 5), 'abc');
    assert.equal(tailChars('abcdef', 3), 'def');
    assert.equal(tailChars('abc', 0), '');
  });

  test('counts code points and never splits a surrogate pair', () => {
    assert.equal(tailChars('x😀y😀', 3), '😀y😀');
    assert.equal(tailChars('😀😀', 1), '😀');
  });
});

describe('caseOutcome (§6.5/§6.6)', () => {
  test('exit 0, no after-command → success', () => {
    assert.deepEqual(caseOutcome({ caseExitCode: 0, afterExitCode: null }), {
      status: 'success',
      exitCode: 0,
      errorMessage: null,
    });
  });

  test('exit 0 and after 0 → success', () => {
    assert.equal(caseOutcome({ caseExitCode: 0, afterExitCode: 0 }).status, 'success');
  });

  test('case non-zero → failed with the case code, even when after also failed', () => {
    assert.deepEqual(caseOutcome({ caseExitCode: 3, afterExitCode: 9 }), {
      status: 'failed',
      exitCode: 3,
      errorMessage: 'E_AGENT_EXIT_NON_ZERO: exit code 3',
    });
  });

  test('case 0 but after non-zero → failed with the after code', () => {
    assert.deepEqual(caseOutcome({ caseExitCode: 0, afterExitCode: 2 }), {
      status: 'failed',
      exitCode: 2,
      errorMessage: 'E_AFTER_EXEC_NON_ZERO: exit code 2',
    });
  });
});
