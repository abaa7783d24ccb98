import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, loadConfig } from '../../src/config';
import {
  activitySpanIds,
  workflowSpanAttributes,
  workflowSpanIds,
} from '../../src/tracing/benchmark-span-attributes';

function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err;
  }
  assert.fail('expected a ConfigError');
}

describe('ORCHESTRATOR_OTLP_* configuration', () => {
  test('off unless an endpoint is set; the standard OTEL_EXPORTER_OTLP_* names do not count', () => {
    assert.deepEqual(loadConfig({}).tracing, { endpoint: undefined, headers: {} });
    assert.equal(
      loadConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }).tracing.endpoint,
      undefined,
    );
    // Headers alone switch nothing on (and are not even looked at).
    assert.deepEqual(loadConfig({ ORCHESTRATOR_OTLP_HEADERS: 'not a header list' }).tracing, {
      endpoint: undefined,
      headers: {},
    });
    assert.equal(
      loadConfig({ ORCHESTRATOR_OTLP_ENDPOINT: '  ' }).tracing.endpoint,
      undefined,
      'blank is unset',
    );
  });

  test('a base URL gets /v1/traces, a URL that names the path is kept', () => {
    const endpoint = (v: string) => loadConfig({ ORCHESTRATOR_OTLP_ENDPOINT: v }).tracing.endpoint;
    assert.equal(endpoint('http://otel-collector:4318'), 'http://otel-collector:4318/v1/traces');
    assert.equal(endpoint('https://otel.example.com/'), 'https://otel.example.com/v1/traces');
    assert.equal(endpoint('https://otel.example.com/otlp'), 'https://otel.example.com/otlp/v1/traces');
    assert.equal(endpoint('http://collector:4318/v1/traces'), 'http://collector:4318/v1/traces');
  });

  test('headers: comma-separated name=value pairs, URL-decoded, names lowercased', () => {
    const { headers } = loadConfig({
      ORCHESTRATOR_OTLP_ENDPOINT: 'http://collector:4318',
      ORCHESTRATOR_OTLP_HEADERS: 'Authorization=Bearer%20abc%3D%3D, x-scope-orgid = team-a ,',
    }).tracing;
    assert.deepEqual(headers, { authorization: 'Bearer abc==', 'x-scope-orgid': 'team-a' });
  });

  test('a malformed value names the variable and never shows the value', () => {
    const secret = 'SECRET-7f3a';
    for (const [variable, env] of [
      [
        'ORCHESTRATOR_OTLP_HEADERS',
        {
          ORCHESTRATOR_OTLP_ENDPOINT: 'http://c:4318',
          ORCHESTRATOR_OTLP_HEADERS: `Authorization Bearer ${secret}`,
        },
      ],
      [
        'ORCHESTRATOR_OTLP_HEADERS',
        { ORCHESTRATOR_OTLP_ENDPOINT: 'http://c:4318', ORCHESTRATOR_OTLP_HEADERS: `bad name=${secret}` },
      ],
      [
        'ORCHESTRATOR_OTLP_HEADERS',
        { ORCHESTRATOR_OTLP_ENDPOINT: 'http://c:4318', ORCHESTRATOR_OTLP_HEADERS: `k=%E0%A4%A${secret}` },
      ],
      ['ORCHESTRATOR_OTLP_ENDPOINT', { ORCHESTRATOR_OTLP_ENDPOINT: `collector-${secret}:4318` }],
      ['ORCHESTRATOR_OTLP_ENDPOINT', { ORCHESTRATOR_OTLP_ENDPOINT: `grpc://collector:4317/${secret}` }],
      ['ORCHESTRATOR_OTLP_ENDPOINT', { ORCHESTRATOR_OTLP_ENDPOINT: `https://user:${secret}@collector:4318` }],
      [
        'ORCHESTRATOR_OTLP_ENDPOINT',
        { ORCHESTRATOR_OTLP_ENDPOINT: `https://collector:4318/?token=${secret}` },
      ],
    ] as const) {
      const err = configError(env);
      assert.equal(err.variable, variable, JSON.stringify(env));
      assert.match(err.message, new RegExp(variable));
      assert.ok(!err.message.includes(secret), err.message);
    }
  });
});

describe('benchmark span attributes', () => {
  test('case id and phase from the activity id, experiment id from the workflow id', () => {
    assert.deepEqual(activitySpanIds('experiment-42-9b1c', 'case-901/run'), {
      temporalWorkflowId: 'experiment-42-9b1c',
      'benchmark.experiment_id': '42',
      'benchmark.run_case_id': '901',
      'benchmark.case_phase': 'run',
    });
    assert.deepEqual(activitySpanIds('experiment-42-9b1c', '3'), {
      temporalWorkflowId: 'experiment-42-9b1c',
      'benchmark.experiment_id': '42',
    });
    assert.deepEqual(activitySpanIds(undefined, 'case-x/run'), {});
    assert.deepEqual(workflowSpanIds('some-other-workflow'), { temporalWorkflowId: 'some-other-workflow' });
  });

  test('workflow spans keep scalar WorkflowInfo fields only, plus the ids', () => {
    const attributes = {
      workflowId: 'experiment-7-abc',
      runId: 'r1',
      workflowType: 'experimentRunWorkflow',
      historyLength: 40,
      continueAsNewSuggested: false,
      memo: { dataset: 'd', agent: 'a' },
      searchAttributes: { ExperimentId: ['7'] },
      startTime: new Date(0),
      unsafe: { isReplaying: false, now: () => 0 },
      tags: ['a', 'b'],
    };
    // WorkflowInfo arrives typed as span attributes, objects and all.
    const kept = workflowSpanAttributes(attributes as unknown as Record<string, string>);
    assert.deepEqual(kept, {
      workflowId: 'experiment-7-abc',
      runId: 'r1',
      workflowType: 'experimentRunWorkflow',
      historyLength: 40,
      continueAsNewSuggested: false,
      tags: ['a', 'b'],
      temporalWorkflowId: 'experiment-7-abc',
      'benchmark.experiment_id': '7',
    });
  });
});
