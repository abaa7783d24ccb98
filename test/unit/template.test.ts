import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  buildCommandContext,
  declaredVariables,
  renderCommandTemplate,
  renderEvaluatorPrompt,
  TemplateError,
  templateRegistry,
  validateTemplateRegistry,
  type CommandContextInput,
  type TemplateErrorCode,
} from '../../src/domain/template';

// sha256 of the platform's contracts/template_variables.json (shared/contract-data): shipped byte for byte.
const PLATFORM_REGISTRY_SHA256 = 'ed1be2ddb369937eecce6cf8d831c3580bc73b814bab635d2a083b1d8f09f607';

function throwsTemplateError(fn: () => unknown, code: TemplateErrorCode, detail?: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof TemplateError, String(err));
    assert.equal(err.code, code);
    if (detail !== undefined) assert.equal(err.message, `${code}: ${detail}`);
    return true;
  });
}

function commandInput(overrides: Partial<CommandContextInput> = {}): CommandContextInput {
  return {
    experimentId: 75,
    datasetId: 12,
    datasetName: 'OpenClaw OTEL Demo',
    agentId: 33,
    agentName: 'MockOutput and OTEL',
    agentKey: 'mock-output-otel',
    agentVersion: 'v1',
    runCase: {
      runCaseId: 196,
      dataItemId: 458,
      attemptNo: 1,
      userInput: 'what\'s "2+2"? $(echo pwned) `id` $& $1',
      sessionJsonl: '[{"role":"user","content":"hi"}]',
      traceId: null,
    },
    mockBaseUrl: 'http://127.0.0.1:18080',
    ...overrides,
  };
}

describe('template registry', () => {
  test('the shipped registry is the platform copy and validates', () => {
    const shipped = readFileSync(path.join(__dirname, '../../contracts/template_variables.json'));
    assert.equal(createHash('sha256').update(shipped).digest('hex'), PLATFORM_REGISTRY_SHA256);
    assert.equal(templateRegistry.version, 1);
    assert.deepEqual(Object.keys(templateRegistry.groups).sort(), [
      'agent_runtime_commands',
      'evaluator_prompt',
    ]);
  });

  test('declared variables of both groups (§6.4)', () => {
    assert.deepEqual(
      [...declaredVariables(templateRegistry, 'agent_runtime_commands')],
      [
        'experiment.id',
        'dataset.id',
        'dataset.name',
        'agent.id',
        'agent.name',
        'agent.agent_key',
        'agent.version',
        'run_case.run_case_id',
        'run_case.data_item_id',
        'run_case.attempt_no',
        'run_case.user_input',
        'run_case.session_jsonl',
        'run_case.trace_id',
        'mock.base_url',
      ],
    );
    assert.deepEqual(
      [...declaredVariables(templateRegistry, 'evaluator_prompt')],
      [
        'data_item.id',
        'data_item.input',
        'data_item.session',
        'data_item.trajectory',
        'data_item.output',
        'data_item.trace_id',
        'run.output',
        'run.trajectory',
        'run.status',
        'run.logs',
        'run.latency_ms',
        'tools',
      ],
    );
  });

  const valid = () => ({
    version: 1,
    groups: { agent_runtime_commands: { variables: [{ path: 'a.b', description: 'd' }] } },
  });

  test('validation error codes', () => {
    throwsTemplateError(
      () => validateTemplateRegistry({ ...valid(), version: 0 }),
      'E_TEMPLATE_VARS_INVALID_VERSION',
    );
    throwsTemplateError(
      () => validateTemplateRegistry({ ...valid(), version: '1' }),
      'E_TEMPLATE_VARS_INVALID_VERSION',
    );
    throwsTemplateError(
      () => validateTemplateRegistry({ ...valid(), version: 1.5 }),
      'E_TEMPLATE_VARS_INVALID_VERSION',
    );
    throwsTemplateError(() => validateTemplateRegistry(null), 'E_TEMPLATE_VARS_INVALID_VERSION');
    throwsTemplateError(
      () => validateTemplateRegistry({ version: 1, groups: [] }),
      'E_TEMPLATE_VARS_INVALID_GROUPS',
    );
    throwsTemplateError(
      () => validateTemplateRegistry({ version: 1, groups: { g: 'x' } }),
      'E_TEMPLATE_VARS_INVALID_GROUP',
      'g',
    );
    throwsTemplateError(
      () => validateTemplateRegistry({ version: 1, groups: { g: { variables: [] } } }),
      'E_TEMPLATE_VARS_EMPTY_GROUP',
      'g',
    );
    throwsTemplateError(
      () => validateTemplateRegistry({ version: 1, groups: { g: {} } }),
      'E_TEMPLATE_VARS_EMPTY_GROUP',
    );
    throwsTemplateError(
      () => validateTemplateRegistry({ version: 1, groups: { g: { variables: ['a.b'] } } }),
      'E_TEMPLATE_VARS_INVALID_VARIABLE',
      'group=g index=0',
    );
    throwsTemplateError(
      () =>
        validateTemplateRegistry({
          version: 1,
          groups: {
            g: {
              variables: [
                { path: 'a', description: 'd' },
                { path: ' ', description: 'd' },
              ],
            },
          },
        }),
      'E_TEMPLATE_VARS_MISSING_FIELDS',
      'group=g index=1',
    );
    throwsTemplateError(
      () => validateTemplateRegistry({ version: 1, groups: { g: { variables: [{ path: 'a' }] } } }),
      'E_TEMPLATE_VARS_MISSING_FIELDS',
    );
  });

  test('a missing group → E_TEMPLATE_VARS_GROUP_NOT_FOUND', () => {
    const registry = validateTemplateRegistry(valid());
    throwsTemplateError(
      () => declaredVariables(registry, 'evaluator_prompt'),
      'E_TEMPLATE_VARS_GROUP_NOT_FOUND',
    );
    assert.deepEqual([...declaredVariables(registry, 'agent_runtime_commands')], ['a.b']);
  });

  test('group titles and examples are kept', () => {
    const group = templateRegistry.groups.agent_runtime_commands;
    assert.equal(group?.title, 'Agent Runtime Command Template Variables');
    assert.equal(group?.variables[0]?.example, '90');
  });
});

describe('renderCommandTemplate (test_runtime_command_template port)', () => {
  test('experiment 75, run case 196, mock base url → "echo 75 196 http://127.0.0.1:18080"', () => {
    const context = buildCommandContext(commandInput());
    assert.equal(
      renderCommandTemplate('echo {{experiment.id}} {{run_case.run_case_id}} {{mock.base_url}}', context),
      'echo 75 196 http://127.0.0.1:18080',
    );
  });

  test('an undeclared variable is rejected', () => {
    throwsTemplateError(
      () => renderCommandTemplate('echo {{run_case.missing}}', buildCommandContext(commandInput())),
      'E_RUNTIME_COMMAND_TEMPLATE_VARIABLE_NOT_DECLARED',
      'run_case.missing',
    );
  });

  test('all placeholders are checked before anything resolves', () => {
    // experiment.id is declared but missing from the context; the undeclared one must win.
    throwsTemplateError(
      () => renderCommandTemplate('{{experiment.id}} {{nope}}', {}),
      'E_RUNTIME_COMMAND_TEMPLATE_VARIABLE_NOT_DECLARED',
      'nope',
    );
  });

  test('declared but absent from the context → E_TEMPLATE_VARIABLE_NOT_FOUND', () => {
    throwsTemplateError(
      () => renderCommandTemplate('echo {{ experiment.id }}', { experiment: {} }),
      'E_TEMPLATE_VARIABLE_NOT_FOUND',
      'experiment.id',
    );
  });

  test('trims the template and the result; blank → ""', () => {
    assert.equal(renderCommandTemplate('   ', {}), '');
    assert.equal(renderCommandTemplate('', {}), '');
    const context = buildCommandContext(commandInput({ mockBaseUrl: '' }));
    assert.equal(renderCommandTemplate('  run {{mock.base_url}}  ', context), 'run');
  });

  test('inner whitespace in placeholders; other braces stay verbatim', () => {
    const context = buildCommandContext(commandInput());
    assert.equal(
      renderCommandTemplate("awk '{print $1}' {{  agent.agent_key }} {{ 1bad }} {{}} {x}", context),
      "awk '{print $1}' mock-output-otel {{ 1bad }} {{}} {x}",
    );
  });

  test('user input is spliced verbatim (no $-pattern expansion, no quoting)', () => {
    const context = buildCommandContext(commandInput());
    assert.equal(
      renderCommandTemplate('agent --input {{run_case.user_input}}', context),
      'agent --input what\'s "2+2"? $(echo pwned) `id` $& $1',
    );
  });

  test('values are not re-rendered', () => {
    const context = buildCommandContext(
      commandInput({ datasetName: '{{experiment.id}}', runCase: { ...commandInput().runCase } }),
    );
    assert.equal(renderCommandTemplate('{{dataset.name}}', context), '{{experiment.id}}');
  });

  test('trace_id is "" when null and verbatim otherwise', () => {
    const none = buildCommandContext(commandInput());
    assert.equal(renderCommandTemplate('t={{run_case.trace_id}}', none), 't=');
    const input = commandInput();
    const withTrace = buildCommandContext({ ...input, runCase: { ...input.runCase, traceId: 'abc' } });
    assert.equal(renderCommandTemplate('t={{run_case.trace_id}}', withTrace), 't=abc');
  });

  test('the registry can be injected', () => {
    const registry = validateTemplateRegistry({
      version: 1,
      groups: { agent_runtime_commands: { variables: [{ path: 'only.this', description: 'd' }] } },
    });
    assert.equal(renderCommandTemplate('{{only.this}}', { only: { this: 7 } }, registry), '7');
    throwsTemplateError(
      () => renderCommandTemplate('{{experiment.id}}', { experiment: { id: 1 } }, registry),
      'E_RUNTIME_COMMAND_TEMPLATE_VARIABLE_NOT_DECLARED',
    );
  });
});

describe('buildCommandContext', () => {
  test('builds the nested context with numeric ids', () => {
    assert.deepEqual(buildCommandContext(commandInput()), {
      experiment: { id: 75 },
      dataset: { id: 12, name: 'OpenClaw OTEL Demo' },
      agent: { id: 33, name: 'MockOutput and OTEL', agent_key: 'mock-output-otel', version: 'v1' },
      run_case: {
        run_case_id: 196,
        data_item_id: 458,
        attempt_no: 1,
        user_input: 'what\'s "2+2"? $(echo pwned) `id` $& $1',
        session_jsonl: '[{"role":"user","content":"hi"}]',
        trace_id: '',
      },
      mock: { base_url: 'http://127.0.0.1:18080' },
    });
  });

  test('every declared command variable resolves', () => {
    const context = buildCommandContext(commandInput());
    for (const variable of declaredVariables(templateRegistry, 'agent_runtime_commands')) {
      assert.doesNotThrow(() => renderCommandTemplate(`{{${variable}}}`, context), variable);
    }
  });
});

describe('renderEvaluatorPrompt (test_template_renderer port)', () => {
  test('input=hello output={ok:true} → contains input=hello and pretty "ok": true', () => {
    const rendered = renderEvaluatorPrompt('input={{data_item.input}} output={{run.output}}', {
      data_item: { input: 'hello' },
      run: { output: { ok: true } },
    });
    assert.ok(rendered.includes('input=hello'), rendered);
    assert.ok(rendered.includes('"ok": true'), rendered);
    assert.equal(rendered, 'input=hello output={\n  "ok": true\n}');
  });

  test('{{run.missing}} → template render error', () => {
    throwsTemplateError(
      () => renderEvaluatorPrompt('{{run.missing}}', { run: {} }),
      'E_TEMPLATE_VARIABLE_NOT_FOUND',
      'run.missing',
    );
  });

  test('a prompt with input, output and trajectory renders all three', () => {
    const context = {
      data_item: {
        id: 100,
        input: '现在几点？',
        session: '[]',
        trajectory: null,
        output: {},
        trace_id: '',
      },
      run: {
        output: { final_answer: '12:00' },
        trajectory: [{ name: 'query' }],
        status: 'success',
        logs: '',
        latency_ms: 88,
      },
      tools: {},
    };
    const rendered = renderEvaluatorPrompt(
      'Task: {{data_item.input}}\nOutput: {{run.output}}\nTrajectory: {{run.trajectory}}',
      context,
    );
    assert.ok(rendered.includes('现在几点？'), rendered);
    assert.ok(rendered.includes('"final_answer": "12:00"'), rendered);
    assert.ok(rendered.includes('"name": "query"'), rendered);
  });

  test('no declared-variable check and no trimming', () => {
    assert.equal(renderEvaluatorPrompt('  {{anything.goes}}\n', { anything: { goes: 'x' } }), '  x\n');
  });

  test('value formatting: numbers, null, booleans, non-ASCII kept, nested JSON indented', () => {
    const rendered = renderEvaluatorPrompt('{{a}}|{{b}}|{{c}}|{{d}}|{{e}}|{{f}}', {
      a: 42,
      b: null,
      c: false,
      d: ['é', { k: [1] }],
      e: {},
      f: '',
    });
    assert.equal(rendered, '42|null|false|[\n  "é",\n  {\n    "k": [\n      1\n    ]\n  }\n]|{}|');
  });

  test('paths do not walk into arrays or strings', () => {
    throwsTemplateError(
      () => renderEvaluatorPrompt('{{a.0}}', { a: ['x'] }),
      'E_TEMPLATE_VARIABLE_NOT_FOUND',
    );
    throwsTemplateError(
      () => renderEvaluatorPrompt('{{a.length}}', { a: 'xyz' }),
      'E_TEMPLATE_VARIABLE_NOT_FOUND',
    );
    throwsTemplateError(() => renderEvaluatorPrompt('{{toString}}', {}), 'E_TEMPLATE_VARIABLE_NOT_FOUND');
  });
});
