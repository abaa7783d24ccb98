import path from 'node:path';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { buildRuntimeSnapshot, pythonCanonicalJson } from '../../src/domain/runtime-snapshot';
import { redactSecrets, REDACTED } from '../../src/domain/secret-redaction';

const sha256Hex = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');

describe('pythonCanonicalJson', () => {
  // Expected strings and hashes produced by CPython 3 json.dumps(sort_keys=True, separators=(",", ":")).
  test('matches Python byte for byte: sorting, ensure_ascii escapes, floats', () => {
    const value = {
      b: 1,
      a: [
        1.5,
        0.00001,
        10 ** 16,
        1e21,
        123456789.125,
        -0.5,
        2.5e-5,
        true,
        null,
        0.1,
        1e-7,
        1e300,
        5e-324,
        1.7976931348623157e308,
        0.0001,
        123.456,
      ],
      é: 'ü😀\u2028\u007f"\\\n\t\u0001\b\f\r/',
      '\ue000': 1,
      '😀': 2,
      z: { y: 'x', Y: [] },
    };
    const expected =
      '{"a":[1.5,1e-05,10000000000000000,1e+21,123456789.125,-0.5,2.5e-05,true,null,0.1,1e-07,1e+300,5e-324,' +
      '1.7976931348623157e+308,0.0001,123.456],"b":1,"z":{"Y":[],"y":"x"},' +
      '"\\u00e9":"\\u00fc\\ud83d\\ude00\\u2028\\u007f\\"\\\\\\n\\t\\u0001\\b\\f\\r/","\\ue000":1,"\\ud83d\\ude00":2}';
    const canonical = pythonCanonicalJson(value);
    assert.equal(canonical, expected);
    assert.equal(sha256Hex(canonical), '2594d8c9a82ca15b6604f6843ee0ba6a960a18719993c7af5669e40288c6957e');
  });

  test('the platform example spec hashes like Python', () => {
    const message = JSON.parse(
      readFileSync(path.join(__dirname, '../fixtures/platform-message-example.json'), 'utf8'),
    ) as { agent: { runtime_spec_json: unknown } };
    const canonical = pythonCanonicalJson(message.agent.runtime_spec_json);
    assert.equal(
      canonical,
      '{"agent_image":"bench/agent-base:bookworm","case_exec_command":"python3 -c \\"import json;print(json.dumps({\'output\':\'4\'}))\\"",' +
        '"pull_policy":"if-not-present","runtime_type":"agno_docker","sandbox_start_command":"sleep infinity"}',
    );
    assert.equal(sha256Hex(canonical), 'da7b7ea5ad7fba64a35f8d397162bcf79d0e5c1e6fe7484c60282c9f43381d8d');
  });

  test('scalars, empty containers, undefined handling', () => {
    assert.equal(pythonCanonicalJson(null), 'null');
    assert.equal(pythonCanonicalJson(-0), '0');
    assert.equal(pythonCanonicalJson(Number.NaN), 'NaN');
    assert.equal(pythonCanonicalJson(-Infinity), '-Infinity');
    assert.equal(pythonCanonicalJson({}), '{}');
    assert.equal(pythonCanonicalJson([]), '[]');
    assert.equal(pythonCanonicalJson({ a: undefined, b: [undefined] }), '{"b":[null]}');
    assert.equal(pythonCanonicalJson(12n), '12');
    assert.throws(() => pythonCanonicalJson(() => 1), TypeError);
  });
});

describe('redactSecrets', () => {
  test('replaces secret-named string values at any depth, case-insensitively', () => {
    const input = {
      api_key: 'sk-1',
      nested: [{ apiKey: 'sk-2', headers: { Authorization: 'Bearer x', 'X-API-KEY': 'k', other: 'keep' } }],
      PASSWORD: 'p',
      token: 'by pattern now',
    };
    assert.deepEqual(redactSecrets(input), {
      api_key: REDACTED,
      nested: [
        { apiKey: REDACTED, headers: { Authorization: REDACTED, 'X-API-KEY': REDACTED, other: 'keep' } },
      ],
      PASSWORD: REDACTED,
      token: REDACTED,
    });
  });

  test('empty strings stay empty; non-string secret values are left alone', () => {
    assert.deepEqual(redactSecrets({ api_key: '', password: 123, authorization: null }), {
      api_key: '',
      password: 123,
      authorization: null,
    });
  });

  test('returns a deep copy and leaves the input untouched', () => {
    const input = { scorer_config: { api_key: 'sk' }, list: [1] };
    const out = redactSecrets(input);
    assert.notEqual(out, input);
    assert.notEqual(out.scorer_config, input.scorer_config);
    assert.notEqual(out.list, input.list);
    assert.equal(input.scorer_config.api_key, 'sk');
  });

  test('scalars pass through', () => {
    assert.equal(redactSecrets('x'), 'x');
    assert.equal(redactSecrets(null), null);
  });
});

describe('buildRuntimeSnapshot (§3.7, with api_key redacted)', () => {
  const scorers = [
    {
      id: 9,
      scorer_key: 'judge',
      name: 'Judge',
      scorer_config: {
        prompt_template: 'p',
        base_url: 'http://x',
        model_name: 'm',
        api_key: 'sk-interop-SECRET-123',
      },
    },
  ];

  test('builds every field; scorers redacted; hash over the raw spec', () => {
    const spec = { agent_image: 'img:1', case_exec_command: 'run', agent_command: 'legacy' };
    const snapshot = buildRuntimeSnapshot({
      runtimeSpecRaw: spec,
      scorers,
      runCaseId: 901,
      generatedAtUnixSeconds: 1764000000.9,
      sha256Hex,
    });
    assert.deepEqual(snapshot, {
      runtime_spec_hash: sha256Hex(pythonCanonicalJson(spec)),
      runtime_type: 'agno_docker',
      agent_image: 'img:1',
      agent_command: 'legacy',
      services: [],
      sandbox: {},
      scorers: [{ ...scorers[0], scorer_config: { ...scorers[0]?.scorer_config, api_key: REDACTED } }],
      run_case_id: 901,
      generated_at: 1764000000,
    });
    assert.ok(!JSON.stringify(snapshot).includes('SECRET'));
    assert.equal(scorers[0]?.scorer_config.api_key, 'sk-interop-SECRET-123');
  });

  test('spec values are copied through when present; secrets in services/sandbox are redacted too', () => {
    const snapshot = buildRuntimeSnapshot({
      runtimeSpecRaw: {
        runtime_type: 'custom',
        services: [{ name: 'db', password: 'pw' }],
        sandbox: { timeout_seconds: 180 },
      },
      scorers: [],
      runCaseId: 1,
      generatedAtUnixSeconds: 5,
      sha256Hex,
    });
    assert.equal(snapshot.runtime_type, 'custom');
    assert.equal(snapshot.agent_image, null);
    assert.equal(snapshot.agent_command, null);
    assert.deepEqual(snapshot.services, [{ name: 'db', password: REDACTED }]);
    assert.deepEqual(snapshot.sandbox, { timeout_seconds: 180 });
  });
});
