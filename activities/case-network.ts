import type { ExperimentRunRequested, RunCaseInput } from '../src/domain/message';
import type { RuntimeSpec } from '../src/domain/runtime-spec';
import { caseOtelEnv } from '../src/otel/otel-collector';
import type { CaseGateway, RecordedRequest } from '../src/mock-gateway/case-gateway';
import type { Logger } from '../src/logger';
import type { ActivityDeps } from './activity-deps';

/** What the container of one case sees of the network: telemetry, the mock gateway, the sealing. */
export interface CaseNetwork {
  /** `{{mock.base_url}}`: the case's gateway when one runs, else the OTel collector. */
  mockBaseUrl: string;
  env: Record<string, string>;
  files: Array<{ path: string; content: string; mode: number }>;
  /** The sealed network the container must join instead of runtime_spec_json.docker_network. */
  network: string | undefined;
  /** After start: untokened posts from these addresses belong to this case (agents of the original). */
  bindContainer(addresses: string[]): void;
  /**
   * After the container is gone: stop the gateway, wait until every span it sent is stored, revoke
   * the token. `telemetryComplete` says whether that wait finished (then no flush grace is needed).
   */
  close(): Promise<{ requests: RecordedRequest[]; telemetryComplete: boolean }>;
}

/** §5.2: the gateway runs for a case with a mock_config, or when the agent asks for it. */
function wantsGateway(spec: RuntimeSpec, c: RunCaseInput): boolean {
  return c.mock_config !== null || spec.raw.mock_gateway === true;
}

export async function openCaseNetwork(
  deps: ActivityDeps,
  p: { request: ExperimentRunRequested; caseInput: RunCaseInput; spec: RuntimeSpec; log: Logger },
): Promise<CaseNetwork> {
  const { collector } = deps;
  const { request, caseInput, spec, log } = p;
  const token = collector.issueToken({
    runCaseId: caseInput.run_case_id,
    experimentId: request.experiment.id,
    dataItemId: caseInput.data_item_id,
  });
  let gateway: CaseGateway | undefined;
  try {
    if (wantsGateway(spec, caseInput)) {
      const sealed =
        deps.config.mockGateway.sealPassthroughFalse && caseInput.mock_config?.passthrough === false;
      gateway = await deps.gateways.start({
        runCaseId: caseInput.run_case_id,
        config: caseInput.mock_config,
        sealed,
      });
      if (gateway.network && spec.dockerNetwork) {
        log.warn(
          { code: 'MOCK_GATEWAY_NETWORK_OVERRIDE', docker_network: spec.dockerNetwork },
          'sealed case: docker_network ignored',
        );
      }
    }
  } catch (err) {
    collector.revokeToken(token);
    throw err;
  }
  const mockBaseUrl = gateway?.baseUrl ?? deps.collectorUrl;
  return {
    mockBaseUrl,
    env: {
      // Through {{mock.base_url}} so that a sealed container, which can reach only its gateway,
      // still exports: the gateway intercepts /api/otel/v1/* and forwards to the collector.
      ...caseOtelEnv({
        endpoint: `${mockBaseUrl}/api/otel`,
        token,
        serviceName: request.agent.agent_key,
        runCaseId: caseInput.run_case_id,
        experimentId: request.experiment.id,
        dataItemId: caseInput.data_item_id,
      }),
      BENCHMARK_MOCK_BASE_URL: mockBaseUrl,
      ...(gateway?.proxyEnv() ?? {}),
    },
    files: gateway?.containerFiles() ?? [],
    network: gateway?.network,
    bindContainer(addresses) {
      for (const ip of addresses) collector.bindSource(ip, token);
    },
    async close() {
      const requests = gateway?.requests() ?? [];
      try {
        await gateway?.close();
        const telemetryComplete = await collector.drain(deps.config.otel.flushGraceMs);
        return { requests, telemetryComplete };
      } finally {
        collector.revokeToken(token);
      }
    },
  };
}
