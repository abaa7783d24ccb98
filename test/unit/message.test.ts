import path from 'node:path';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  jsonDepthAbove,
  parseExperimentMessage,
  parseMockConfig,
  resolveScorerKey,
  type ExperimentRunRequested,
  type ParseMessageResult,
} from '../../src/domain/message';

const PLATFORM_EXAMPLE = path.join(__dirname, '../fixtures/platform-message-example.json');

function minimalMessage(): Record<string, unknown> {
  return {
    message_type: 'experiment.run.requested',
    schema_version: 'v2',
    message_id: 'm-1',
    experiment: { id: 42, triggered_by: 'user-1' },
    dataset: { id: 7, name: 'Weather QA' },
    agent: {
      id: 5,
      name: 'Weather Bot',
      agent_key: 'weather-bot',
      version: 'v3',
      runtime_spec_json: { agent_image: 'img:1', case_exec_command: 'run' },
    },
    scorers: [],
    run_cases: [
      {
        run_case_id: 901,
        data_item_id: 311,
        attempt_no: 1,
        session_jsonl: '[]',
        user_input: 'hi',
      },
    ],
  };
}

function withCase(patch: Record<string, unknown>): Record<string, unknown> {
  const msg = minimalMessage();
  const cases = msg.run_cases as Record<string, unknown>[];
  msg.run_cases = [{ ...cases[0], ...patch }];
  return msg;
}

function parseOk(body: unknown): ExperimentRunRequested {
  const result = parseExperimentMessage(JSON.stringify(body));
  if (!result.ok) assert.fail(`expected ok, got ${result.error}`);
  return result.message;
}

function parseErr(
  body: string | Uint8Array | Record<string, unknown>,
): Extract<ParseMessageResult, { ok: false }> {
  const raw = typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body);
  const result = parseExperimentMessage(raw);
  if (result.ok) assert.fail('expected a parse failure');
  assert.ok(result.error.startsWith(`${result.code}: `), result.error);
  return result;
}

describe('parseExperimentMessage: the platform example', () => {
  const body = readFileSync(PLATFORM_EXAMPLE);

  test('parses from bytes with string ids normalised to numbers', () => {
    const result = parseExperimentMessage(new Uint8Array(body));
    if (!result.ok) assert.fail(result.error);
    const m = result.message;
    assert.equal(m.message_id, '949b23ef-75a1-4b36-a8e0-22dfd9673304');
    assert.equal(m.experiment.id, 1);
    assert.equal(m.experiment.triggered_by, 'interop');
    assert.equal(m.dataset.id, 1);
    assert.equal(m.agent.id, 1);
    assert.equal(m.scorers[0]?.id, 9);
    assert.equal(m.scorers[0]?.scorer_key, 'interop-1795289586838');
    assert.deepEqual(
      m.run_cases.map((c) => [c.run_case_id, c.data_item_id, c.attempt_no]),
      [
        [1, 1, 1],
        [2, 2, 1],
        [3, 3, 1],
      ],
    );
  });

  test('keeps user_input with quotes, $(...) and backticks intact', () => {
    const m = parseOk(JSON.parse(body.toString('utf8')));
    assert.equal(m.run_cases[0]?.user_input, 'question 1: what\'s "2+2"? $(echo pwned) `id`');
    assert.equal(m.run_cases[0]?.session_jsonl, '[{"role":"user","content":"hello 1"}]');
  });

  test('keeps unknown keys and fills the optional run-case fields', () => {
    const m = parseOk(JSON.parse(body.toString('utf8')));
    assert.deepEqual(m.source, { service: 'arcloop-agent-benchmark', queue: 'interop.test.queue' });
    assert.equal(m.produced_at, '2026-11-21T19:33:08.739Z');
    const rc = m.run_cases[0];
    assert.deepEqual(rc?.reference_output, { answer: '4' });
    assert.equal(rc?.trace_id, null);
    assert.equal(rc?.reference_trajectory, null);
    assert.equal(rc?.mock_config, null);
    assert.equal(m.agent.runtime_spec_json.agent_image, 'bench/agent-base:bookworm');
    assert.equal(m.consumer_hints.should_start_agent_container, true);
  });

  test('accepts a string body too', () => {
    assert.equal(parseExperimentMessage(body.toString('utf8')).ok, true);
  });
});

describe('parseExperimentMessage: defaults and permissiveness', () => {
  test('schema_version, message_id, scorers, run_cases and consumer_hints default', () => {
    const msg = minimalMessage();
    delete msg.schema_version;
    delete msg.message_id;
    delete msg.scorers;
    delete msg.run_cases;
    const m = parseOk(msg);
    assert.equal(m.schema_version, 'v2');
    assert.equal(m.message_id, '');
    assert.deepEqual(m.scorers, []);
    assert.deepEqual(m.run_cases, []);
    assert.deepEqual(m.consumer_hints, {});
  });

  test('extra keys in experiment/dataset/agent/run case are accepted and kept', () => {
    const msg = minimalMessage();
    (msg.experiment as Record<string, unknown>).extra = 1;
    (msg.dataset as Record<string, unknown>).extra = 2;
    (msg.agent as Record<string, unknown>).extra = 3;
    msg.run_cases = [{ ...(msg.run_cases as object[])[0], extra: 4 }];
    const m = parseOk(msg);
    assert.equal(m.experiment.extra, 1);
    assert.equal(m.dataset.extra, 2);
    assert.equal(m.agent.extra, 3);
    assert.equal(m.run_cases[0]?.extra, 4);
  });

  test('optional run-case fields are passed through when present', () => {
    const m = parseOk(
      withCase({ trace_id: 'trace-1', reference_trajectory: [{ step: 1 }], reference_output: null }),
    );
    assert.equal(m.run_cases[0]?.trace_id, 'trace-1');
    assert.deepEqual(m.run_cases[0]?.reference_trajectory, [{ step: 1 }]);
    assert.equal(m.run_cases[0]?.reference_output, null);
  });

  test('ids accept JSON numbers and decimal strings', () => {
    const msg = minimalMessage();
    msg.experiment = { id: '42', triggered_by: 'u' };
    const m = parseOk(msg);
    assert.equal(m.experiment.id, 42);
  });

  test('scorers: key falls back to evaluator_key then default_<idx>; id and config default', () => {
    const msg = minimalMessage();
    msg.scorers = [
      { id: '3', scorer_key: 'task_success', name: 'Task', scorer_config: { api_key: 'k' } },
      { evaluator_key: 'legacy_key' },
      { scorer_key: '  ', evaluator_key: '', name: null, scorer_config: null },
    ];
    const m = parseOk(msg);
    assert.deepEqual(
      m.scorers.map((s) => [s.id, s.scorer_key, s.name, s.scorer_config]),
      [
        [3, 'task_success', 'Task', { api_key: 'k' }],
        [0, 'legacy_key', 'legacy_key', {}],
        [0, 'default_2', 'default_2', {}],
      ],
    );
  });

  test('resolveScorerKey treats blank as absent', () => {
    assert.equal(resolveScorerKey({ scorer_key: 'a', evaluator_key: 'b' }, 0), 'a');
    assert.equal(resolveScorerKey({ scorer_key: '', evaluator_key: 'b' }, 0), 'b');
    assert.equal(resolveScorerKey({}, 4), 'default_4');
  });
});

describe('parseExperimentMessage: error codes', () => {
  test('not JSON → E_MESSAGE_INVALID_JSON', () => {
    assert.equal(parseErr('{not json').code, 'E_MESSAGE_INVALID_JSON');
  });

  test('JSON nested deeper than 200 levels → E_MESSAGE_TOO_DEEP, before it is parsed', () => {
    const deep = (n: number) => ({
      ...minimalMessage(),
      extra: JSON.parse('['.repeat(n) + ']'.repeat(n)) as unknown,
    });
    assert.equal(parseErr(deep(250)).code, 'E_MESSAGE_TOO_DEEP');
    // A million levels would overflow any recursive walk; the check is one linear pass.
    const hostile = `{"message_type":"experiment.run.requested","x":${'['.repeat(1_000_000)}`;
    assert.equal(parseErr(hostile).code, 'E_MESSAGE_TOO_DEEP');
    // Brackets inside strings (escaped quotes included) do not count; 150 levels are fine.
    assert.equal(jsonDepthAbove(JSON.stringify({ s: '[[[[\\"{{{{' }), 2), null);
    // A string ending in a backslash closes where JSON says: the [[ after it counts.
    assert.equal(jsonDepthAbove(JSON.stringify({ a: 'x\\', b: [[1]] }), 2), 3);
    assert.equal(parseExperimentMessage(JSON.stringify(deep(150))).ok, true);
  });

  test('invalid UTF-8 bytes → E_MESSAGE_INVALID_JSON', () => {
    assert.equal(parseErr(new Uint8Array([0x7b, 0xff, 0x7d])).code, 'E_MESSAGE_INVALID_JSON');
  });

  test('JSON that is not an object → E_MESSAGE_SCHEMA_INVALID', () => {
    for (const body of ['[]', 'null', '42', '"x"']) {
      assert.equal(parseErr(body).code, 'E_MESSAGE_SCHEMA_INVALID', body);
    }
  });

  test('wrong message_type → E_UNSUPPORTED_MESSAGE_TYPE with the value', () => {
    const r = parseErr({ ...minimalMessage(), message_type: 'experiment.deleted' });
    assert.equal(r.code, 'E_UNSUPPORTED_MESSAGE_TYPE');
    assert.equal(r.error, 'E_UNSUPPORTED_MESSAGE_TYPE: experiment.deleted');
  });

  test('missing message_type → E_UNSUPPORTED_MESSAGE_TYPE', () => {
    const msg = minimalMessage();
    delete msg.message_type;
    assert.equal(parseErr(msg).code, 'E_UNSUPPORTED_MESSAGE_TYPE');
  });

  test('type is checked before version', () => {
    assert.equal(
      parseErr({ message_type: 'other', schema_version: 'v9' }).code,
      'E_UNSUPPORTED_MESSAGE_TYPE',
    );
  });

  test('wrong schema_version → E_UNSUPPORTED_SCHEMA_VERSION with the value', () => {
    const r = parseErr({ ...minimalMessage(), schema_version: 'v1' });
    assert.equal(r.error, 'E_UNSUPPORTED_SCHEMA_VERSION: v1');
  });

  test('version is checked before the schema', () => {
    assert.equal(
      parseErr({ message_type: 'experiment.run.requested', schema_version: 'v3' }).code,
      'E_UNSUPPORTED_SCHEMA_VERSION',
    );
  });

  test('missing experiment → E_MESSAGE_SCHEMA_INVALID naming it', () => {
    const msg = minimalMessage();
    delete msg.experiment;
    const r = parseErr(msg);
    assert.equal(r.code, 'E_MESSAGE_SCHEMA_INVALID');
    assert.match(r.error, /^E_MESSAGE_SCHEMA_INVALID: experiment: /);
  });

  test('bad ids are rejected with the dotted field path', () => {
    const cases: [unknown, RegExp][] = [
      ['abc', /"abc"/],
      [1.5, /1\.5/],
      [-3, /-3/],
      ['', /""/],
      ['-3', /"-3"/],
      [0, /got 0/],
      [null, /null/],
    ];
    for (const [bad, detail] of cases) {
      const r = parseErr(withCase({ run_case_id: bad }));
      assert.equal(r.code, 'E_MESSAGE_SCHEMA_INVALID');
      assert.match(
        r.error,
        /^E_MESSAGE_SCHEMA_INVALID: run_cases\.0\.run_case_id: expected a positive integer/,
      );
      assert.match(r.error, detail);
    }
  });

  test('experiment.id "abc" names experiment.id', () => {
    const msg = minimalMessage();
    msg.experiment = { id: 'abc', triggered_by: 'u' };
    assert.match(parseErr(msg).error, /^E_MESSAGE_SCHEMA_INVALID: experiment\.id: /);
  });

  test('ids beyond the safe-integer range are rejected', () => {
    const r = parseErr(withCase({ data_item_id: '9007199254740993' }));
    assert.match(r.error, /run_cases\.0\.data_item_id/);
  });

  test('missing id says required', () => {
    const r = parseErr(withCase({ attempt_no: undefined }));
    assert.equal(r.error, 'E_MESSAGE_SCHEMA_INVALID: run_cases.0.attempt_no: required');
  });

  test('missing user_input / session_jsonl are schema errors with their path', () => {
    const msg = minimalMessage();
    msg.run_cases = [{ run_case_id: 1, data_item_id: 1, attempt_no: 1, session_jsonl: '' }];
    assert.match(parseErr(msg).error, /^E_MESSAGE_SCHEMA_INVALID: run_cases\.0\.user_input: /);
    msg.run_cases = [{ run_case_id: 1, data_item_id: 1, attempt_no: 1, user_input: '' }];
    assert.match(parseErr(msg).error, /^E_MESSAGE_SCHEMA_INVALID: run_cases\.0\.session_jsonl: /);
  });

  test('bad scorer id is named', () => {
    const msg = minimalMessage();
    msg.scorers = [{ id: 'x', scorer_key: 'k' }];
    assert.match(parseErr(msg).error, /^E_MESSAGE_SCHEMA_INVALID: scorers\.0\.id: /);
  });

  test('duplicate run_case_id values are a schema error', () => {
    const msg = minimalMessage();
    const first = (msg.run_cases as Record<string, unknown>[])[0];
    msg.run_cases = [first, { ...first, run_case_id: '901', data_item_id: 312 }];
    const r = parseErr(msg);
    assert.equal(r.error, 'E_MESSAGE_SCHEMA_INVALID: run_cases.1.run_case_id: duplicate run_case_id 901');
  });
});

describe('mock_config (test_parser port and §2.5 tolerance)', () => {
  test('given passthrough false and a /healthz json rule, the run case carries it', () => {
    const m = parseOk(
      withCase({
        mock_config: {
          passthrough: false,
          rules: [
            {
              name: 'health',
              match: { methods: ['GET'], path: '/healthz' },
              response: { type: 'json', status: 200, json: { ok: true } },
            },
          ],
        },
      }),
    );
    const mock = m.run_cases[0]?.mock_config;
    assert.ok(mock);
    assert.equal(mock.passthrough, false);
    assert.equal(mock.rules[0]?.match.path, '/healthz');
    assert.deepEqual(mock.rules[0]?.match.methods, ['GET']);
    assert.deepEqual(mock.rules[0]?.response.json, { ok: true });
  });

  test('passthrough defaults to true and rules to []', () => {
    assert.deepEqual(parseMockConfig({}), { passthrough: true, rules: [] });
  });

  test('a non-object config is no config', () => {
    assert.equal(parseMockConfig('nope'), null);
    assert.equal(parseMockConfig([]), null);
    assert.equal(parseMockConfig(null), null);
  });

  test('malformed rules are skipped silently', () => {
    const cfg = parseMockConfig({
      rules: [
        'not a rule',
        { match: 'not a match' },
        { match: {}, response: [1] },
        { name: 'ok', match: { path: '/a' } },
      ],
    });
    assert.equal(cfg?.rules.length, 1);
    assert.equal(cfg?.rules[0]?.name, 'ok');
  });

  test('absent match/response mean match-everything and the default response', () => {
    const rule = parseMockConfig({ rules: [{}] })?.rules[0];
    assert.deepEqual(rule, {
      name: '',
      match: { methods: [] },
      response: { type: 'json', status: 200, headers: {}, json: null, text: '', python_code: '' },
    });
  });

  test('normalises methods, type, status and headers', () => {
    const rule = parseMockConfig({
      rules: [
        {
          match: { methods: ['get', ' ', 'post'], url: '', host: 'api.x.com:8080' },
          response: { type: 'TEXT', status: 42, headers: { 'x-n': 5 }, text: 'hi' },
        },
        { match: { methods: 'GET' }, response: { type: 'weird', status: 0 } },
      ],
    });
    const [a, b] = rule?.rules ?? [];
    assert.deepEqual(a?.match, { methods: ['GET', 'POST'], host: 'api.x.com:8080' });
    assert.equal(a?.response.type, 'text');
    assert.equal(a?.response.status, 100);
    assert.deepEqual(a?.response.headers, { 'x-n': '5' });
    assert.equal(a?.response.text, 'hi');
    assert.deepEqual(b?.match.methods, []);
    assert.equal(b?.response.type, 'json');
    assert.equal(b?.response.status, 200);
  });
});
