import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { caseOtelEnv, INGEST_TOKEN_HEADER, mergeCaseOtelEnv } from '../../src/otel/case-otel-env';

const ours = caseOtelEnv({
  endpoint: 'http://host.docker.internal:14318/api/otel',
  token: 'tok',
  serviceName: 'agent-key',
  runCaseId: 11,
  experimentId: 22,
  dataItemId: 33,
});

describe('mergeCaseOtelEnv (issue 15 item 11)', () => {
  test('an agent without OTEL_* settings gets ours unchanged', () => {
    assert.deepEqual(mergeCaseOtelEnv({ FOO: 'bar' }, ours), { FOO: 'bar', ...ours });
  });

  test("the agent's resource attributes and headers are kept beside ours; ours win for the keys we own", () => {
    const env = mergeCaseOtelEnv(
      {
        OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment=bench, benchmark.run_case_id=999,team=x',
        OTEL_EXPORTER_OTLP_HEADERS: `authorization=Bearer%20abc,${INGEST_TOKEN_HEADER}=forged`,
      },
      ours,
    );
    assert.equal(
      env.OTEL_RESOURCE_ATTRIBUTES,
      'deployment.environment=bench,benchmark.run_case_id=11,team=x,benchmark.experiment_id=22,benchmark.data_item_id=33',
    );
    assert.equal(env.OTEL_EXPORTER_OTLP_HEADERS, `authorization=Bearer%20abc,${INGEST_TOKEN_HEADER}=tok`);
  });

  test('its service name, exporters and batch delay win; where spans go stays ours', () => {
    const env = mergeCaseOtelEnv(
      {
        OTEL_SERVICE_NAME: 'my-agent',
        OTEL_LOGS_EXPORTER: 'none',
        OTEL_BSP_SCHEDULE_DELAY: '100',
        OTEL_EXPORTER_OTLP_ENDPOINT: 'https://vendor.example',
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://vendor.example/v1/traces',
        OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'x-vendor-key=secret',
        OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc',
        OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: 'grpc',
      },
      ours,
    );
    assert.equal(env.OTEL_SERVICE_NAME, 'my-agent');
    assert.equal(env.OTEL_LOGS_EXPORTER, 'none');
    assert.equal(env.OTEL_BSP_SCHEDULE_DELAY, '100');
    assert.equal(env.OTEL_EXPORTER_OTLP_ENDPOINT, 'http://host.docker.internal:14318/api/otel');
    assert.equal(
      env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
      'http://host.docker.internal:14318/api/otel/v1/traces',
    );
    assert.equal(env.OTEL_EXPORTER_OTLP_TRACES_HEADERS, `x-vendor-key=secret,${INGEST_TOKEN_HEADER}=tok`);
    assert.equal(env.OTEL_EXPORTER_OTLP_PROTOCOL, 'http/protobuf');
    assert.equal(env.OTEL_EXPORTER_OTLP_LOGS_PROTOCOL, 'http/protobuf');
    assert.equal(
      mergeCaseOtelEnv({ OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' }, ours).OTEL_EXPORTER_OTLP_PROTOCOL,
      'http/json',
    );
  });

  test('a service.name resource attribute of the agent is not hidden by our OTEL_SERVICE_NAME', () => {
    const env = mergeCaseOtelEnv({ OTEL_RESOURCE_ATTRIBUTES: 'service.name=svc' }, ours);
    assert.equal(env.OTEL_SERVICE_NAME, undefined);
    assert.match(env.OTEL_RESOURCE_ATTRIBUTES ?? '', /^service\.name=svc,benchmark\.run_case_id=11/);
  });
});
