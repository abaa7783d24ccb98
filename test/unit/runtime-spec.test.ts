import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  parseRuntimeSpec,
  resolveCaseSpec,
  RuntimeSpecError,
  type CaseSpecDefaults,
} from '../../src/domain/runtime-spec';

const BASE = { agent_image: 'bench/agent-base:bookworm', case_exec_command: 'python3 run.py' };

function specError(raw: unknown): RuntimeSpecError {
  try {
    parseRuntimeSpec(raw);
  } catch (err) {
    assert.ok(err instanceof RuntimeSpecError, String(err));
    assert.ok(err.message.startsWith(`${err.code}: `), err.message);
    return err;
  }
  return assert.fail('expected a RuntimeSpecError');
}

describe('parseRuntimeSpec: required keys', () => {
  test('missing or blank agent_image → E_RUNTIME_SPEC_IMAGE_REQUIRED', () => {
    for (const spec of [
      { case_exec_command: 'x' },
      { ...BASE, agent_image: '  ' },
      { ...BASE, agent_image: null },
    ]) {
      const err = specError(spec);
      assert.equal(err.code, 'E_RUNTIME_SPEC_IMAGE_REQUIRED');
      assert.equal(err.message, 'E_RUNTIME_SPEC_IMAGE_REQUIRED: agent.runtime_spec_json.agent_image');
    }
  });

  test('missing case_exec_command → E_RUNTIME_SPEC_CASE_EXEC_REQUIRED', () => {
    const err = specError({ agent_image: 'img' });
    assert.equal(err.message, 'E_RUNTIME_SPEC_CASE_EXEC_REQUIRED: agent.runtime_spec_json.case_exec_command');
  });

  test('image is checked before the command, and before any type error', () => {
    assert.equal(specError({ pull_timeout_seconds: 'abc' }).code, 'E_RUNTIME_SPEC_IMAGE_REQUIRED');
  });

  test('null/undefined spec is an empty spec; a non-object is invalid', () => {
    assert.equal(specError(null).code, 'E_RUNTIME_SPEC_IMAGE_REQUIRED');
    assert.equal(specError(undefined).code, 'E_RUNTIME_SPEC_IMAGE_REQUIRED');
    assert.equal(
      specError([]).message,
      'E_SANDBOX_RUNTIME_SPEC_INVALID: agent.runtime_spec_json: expected an object',
    );
    assert.equal(specError('img').code, 'E_SANDBOX_RUNTIME_SPEC_INVALID');
  });

  test('a non-string image is a type error', () => {
    assert.equal(
      specError({ ...BASE, agent_image: 5 }).message,
      'E_SANDBOX_RUNTIME_SPEC_INVALID: agent.runtime_spec_json.agent_image: expected a string',
    );
  });
});

describe('parseRuntimeSpec: defaults (§2.3)', () => {
  test('a minimal spec gets every default', () => {
    const spec = parseRuntimeSpec(BASE);
    assert.deepEqual(spec, {
      agentImage: 'bench/agent-base:bookworm',
      caseExecCommand: 'python3 run.py',
      afterExecCommand: '',
      sandboxStartCommand: '',
      agentCommand: undefined,
      pullPolicy: 'if-not-present',
      pullTimeoutSeconds: 120,
      runTimeoutSeconds: 60,
      inspectTimeoutSeconds: 10,
      startupTimeoutSeconds: 30,
      startupPollIntervalSeconds: 1,
      dockerNetwork: undefined,
      allowHostPorts: [],
      runtimeType: 'agno_docker',
      services: [],
      sandbox: {},
      memoryMb: undefined,
      cpus: undefined,
      pidsLimit: undefined,
      caseTimeoutSeconds: undefined,
      user: undefined,
      env: undefined,
      raw: BASE,
    });
  });

  test('raw is the original object', () => {
    const raw = { ...BASE, scorers: [1], custom: { a: 1 } };
    assert.equal(parseRuntimeSpec(raw).raw, raw);
  });

  test('explicit values are used; numeric strings accepted; poll interval is a float', () => {
    const spec = parseRuntimeSpec({
      ...BASE,
      agent_image: '  img:1  ',
      after_exec_command: 'after',
      sandbox_start_command: 'sleep infinity',
      agent_command: 'legacy',
      pull_timeout_seconds: '300',
      run_timeout_seconds: 90,
      inspect_timeout_seconds: 5,
      startup_timeout_seconds: '45',
      startup_poll_interval_seconds: '0.25',
      docker_network: 'bench-net',
      allow_host_ports: [11434, 8080, 11434],
      runtime_type: 'custom',
      services: [{ name: 'db' }],
      sandbox: { timeout_seconds: 180 },
    });
    assert.equal(spec.agentImage, 'img:1');
    assert.equal(spec.afterExecCommand, 'after');
    assert.equal(spec.sandboxStartCommand, 'sleep infinity');
    assert.equal(spec.agentCommand, 'legacy');
    assert.equal(spec.pullTimeoutSeconds, 300);
    assert.equal(spec.runTimeoutSeconds, 90);
    assert.equal(spec.inspectTimeoutSeconds, 5);
    assert.equal(spec.startupTimeoutSeconds, 45);
    assert.equal(spec.startupPollIntervalSeconds, 0.25);
    assert.equal(spec.dockerNetwork, 'bench-net');
    assert.deepEqual(spec.allowHostPorts, [11434, 8080]);
    assert.equal(spec.runtimeType, 'custom');
    assert.deepEqual(spec.services, [{ name: 'db' }]);
    assert.deepEqual(spec.sandbox, { timeout_seconds: 180 });
  });

  test('zero, empty and null numeric values fall back to the defaults (Python `or`)', () => {
    const spec = parseRuntimeSpec({
      ...BASE,
      pull_timeout_seconds: 0,
      run_timeout_seconds: '',
      inspect_timeout_seconds: null,
      startup_timeout_seconds: '0',
      startup_poll_interval_seconds: 0,
    });
    assert.equal(spec.pullTimeoutSeconds, 120);
    assert.equal(spec.runTimeoutSeconds, 60);
    assert.equal(spec.inspectTimeoutSeconds, 10);
    assert.equal(spec.startupTimeoutSeconds, 30);
    assert.equal(spec.startupPollIntervalSeconds, 1);
  });

  test('integer fields truncate numbers like int()', () => {
    assert.equal(parseRuntimeSpec({ ...BASE, pull_timeout_seconds: 12.9 }).pullTimeoutSeconds, 12);
  });

  test('pull_policy: trimmed, case-insensitive, anything else → if-not-present', () => {
    const policy = (v: unknown) => parseRuntimeSpec({ ...BASE, pull_policy: v }).pullPolicy;
    assert.equal(policy(' ALWAYS '), 'always');
    assert.equal(policy('Never'), 'never');
    assert.equal(policy('if-not-present'), 'if-not-present');
    assert.equal(policy('sometimes'), 'if-not-present');
    assert.equal(policy(3), 'if-not-present');
    assert.equal(policy(undefined), 'if-not-present');
  });

  test('blank optional strings are absent', () => {
    const spec = parseRuntimeSpec({ ...BASE, agent_command: ' ', docker_network: '', runtime_type: '' });
    assert.equal(spec.agentCommand, undefined);
    assert.equal(spec.dockerNetwork, undefined);
    assert.equal(spec.runtimeType, 'agno_docker');
  });
});

describe('parseRuntimeSpec: type errors', () => {
  const cases: [Record<string, unknown>, string][] = [
    [
      { pull_timeout_seconds: 'abc' },
      'agent.runtime_spec_json.pull_timeout_seconds: expected a non-negative integer',
    ],
    [
      { run_timeout_seconds: -5 },
      'agent.runtime_spec_json.run_timeout_seconds: expected a non-negative integer',
    ],
    [{ startup_timeout_seconds: '1.5' }, 'agent.runtime_spec_json.startup_timeout_seconds:'],
    [{ startup_poll_interval_seconds: 'fast' }, 'agent.runtime_spec_json.startup_poll_interval_seconds:'],
    [{ inspect_timeout_seconds: true }, 'agent.runtime_spec_json.inspect_timeout_seconds:'],
    [{ after_exec_command: 5 }, 'agent.runtime_spec_json.after_exec_command: expected a string'],
    [{ docker_network: ['a'] }, 'agent.runtime_spec_json.docker_network: expected a string'],
    [{ allow_host_ports: [0] }, 'agent.runtime_spec_json.allow_host_ports.0:'],
    [{ allow_host_ports: [65536] }, 'agent.runtime_spec_json.allow_host_ports.0:'],
    [{ allow_host_ports: ['5432'] }, 'agent.runtime_spec_json.allow_host_ports.0:'],
    [{ allow_host_ports: 5432 }, 'agent.runtime_spec_json.allow_host_ports:'],
    [{ services: 'db' }, 'agent.runtime_spec_json.services:'],
    [{ sandbox: [] }, 'agent.runtime_spec_json.sandbox:'],
    [{ memory_mb: 'lots' }, 'agent.runtime_spec_json.memory_mb:'],
    [{ env: 'A=1' }, 'agent.runtime_spec_json.env: expected an object of strings'],
    [{ env: { 'A=B': 'x' } }, 'agent.runtime_spec_json.env.A=B: not a valid environment variable name'],
  ];
  for (const [patch, expected] of cases) {
    test(`${JSON.stringify(patch)} → E_SANDBOX_RUNTIME_SPEC_INVALID`, () => {
      const err = specError({ ...BASE, ...patch });
      assert.equal(err.code, 'E_SANDBOX_RUNTIME_SPEC_INVALID');
      assert.ok(err.message.startsWith(`E_SANDBOX_RUNTIME_SPEC_INVALID: ${expected}`), err.message);
    });
  }
});

describe('parseRuntimeSpec: our overrides', () => {
  test('read when present', () => {
    const spec = parseRuntimeSpec({
      ...BASE,
      memory_mb: '1024',
      cpus: 1.5,
      pids_limit: 256,
      case_timeout_seconds: '600',
      user: ' 1000:1000 ',
      env: { MODE: 'bench', RETRIES: 3, DEBUG: true, EXTRA: { a: 1 }, NOTHING: null },
    });
    assert.equal(spec.memoryMb, 1024);
    assert.equal(spec.cpus, 1.5);
    assert.equal(spec.pidsLimit, 256);
    assert.equal(spec.caseTimeoutSeconds, 600);
    assert.equal(spec.user, '1000:1000');
    assert.deepEqual(spec.env, {
      MODE: 'bench',
      RETRIES: '3',
      DEBUG: 'true',
      EXTRA: '{"a":1}',
      NOTHING: 'null',
    });
  });

  test('zero means "use the worker default"', () => {
    const spec = parseRuntimeSpec({ ...BASE, memory_mb: 0, cpus: '0', pids_limit: null });
    assert.equal(spec.memoryMb, undefined);
    assert.equal(spec.cpus, undefined);
    assert.equal(spec.pidsLimit, undefined);
  });
});

describe('resolveCaseSpec: the spec with the worker defaults', () => {
  const defaults: CaseSpecDefaults = {
    caseTimeoutSeconds: 180,
    limits: { memoryMb: 2048, cpus: 1, pidsLimit: 512 },
    hardening: { noNewPrivileges: true, dropAllCapabilities: false },
  };

  test("the worker defaults fill what the spec leaves out; hardening is always the worker's", () => {
    const spec = resolveCaseSpec({ ...BASE, cpus: 2 }, defaults);
    assert.equal(spec.caseTimeoutSeconds, 180);
    assert.deepEqual(spec.limits, { memoryMb: 2048, cpus: 2, pidsLimit: 512 });
    assert.deepEqual(spec.hardening, defaults.hardening);
    assert.deepEqual(spec.startup, {
      timeoutSeconds: 30,
      pollIntervalSeconds: 1,
      runTimeoutSeconds: 60,
      inspectTimeoutSeconds: 10,
    });
    assert.equal(spec.agentImage, BASE.agent_image);
  });

  test('the spec wins where it says something', () => {
    const spec = resolveCaseSpec(
      {
        ...BASE,
        memory_mb: 256,
        pids_limit: 64,
        case_timeout_seconds: 20,
        startup_timeout_seconds: 5,
        startup_poll_interval_seconds: 0.5,
        run_timeout_seconds: 90,
        inspect_timeout_seconds: 0,
      },
      defaults,
    );
    assert.equal(spec.caseTimeoutSeconds, 20);
    assert.deepEqual(spec.limits, { memoryMb: 256, cpus: 1, pidsLimit: 64 });
    // inspect_timeout_seconds 0 would be a deadline nothing meets: the default applies.
    assert.deepEqual(spec.startup, {
      timeoutSeconds: 5,
      pollIntervalSeconds: 0.5,
      runTimeoutSeconds: 90,
      inspectTimeoutSeconds: 10,
    });
  });

  test("a memory limit below Docker's floor fails the spec, not each case", () => {
    assert.throws(
      () => resolveCaseSpec({ ...BASE, memory_mb: 4 }, defaults),
      (err: unknown) =>
        err instanceof RuntimeSpecError &&
        err.code === 'E_SANDBOX_RUNTIME_SPEC_INVALID' &&
        /memory_mb/.test(err.message),
    );
  });

  test('parse errors pass through', () => {
    assert.throws(() => resolveCaseSpec({ case_exec_command: 'x' }, defaults), RuntimeSpecError);
  });
});
