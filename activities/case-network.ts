import type { ExperimentRunRequested, RunCaseInput } from '../src/domain/message';
import type { MockConfig } from '../src/domain/message';
import type { CaseAttribution } from '../src/domain/otlp-flatten';
import type { ResolvedCaseSpec } from '../src/domain/runtime-spec';
import { redactUrl } from '../src/domain/secret-redaction';
import { caseOtelEnv } from '../src/otel/otel-collector';
import { ingestTokenOf } from '../src/otel/case-otel-env';
import type { CaseGateway, RecordedRequest } from '../src/mock-gateway/case-gateway';
import type { IsolatedNetwork } from '../src/docker/isolated-network';
import { errorText } from '../src/domain/errors';
import type { Logger } from '../src/logger';

/** The OTel collector as a case's network uses it (src/otel/otel-collector): per-case ingest tokens. */
export interface TelemetryIngest {
  issueToken(c: CaseAttribution): string;
  /** Takes over a token a killed worker issued for the case (an adopted container carries it). */
  adoptToken(token: string, c: CaseAttribution): void;
  revokeToken(token: string): void;
  /** Untokened posts from this address belong to the token's case. */
  bindSource(ip: string, token: string): void;
  /** Waits (at most timeoutMs) until every ingest in progress is stored; false when it gave up. */
  drain(timeoutMs: number): Promise<boolean>;
}

/** Starts a case's mock gateway (src/mock-gateway/case-gateway), on the case's network when it has one. */
export interface CaseGateways {
  start(p: { runCaseId: number; config: MockConfig | null; network?: IsolatedNetwork }): Promise<CaseGateway>;
}

/** Networks of one case each (src/docker/isolated-network). */
export interface CaseNetworks {
  /**
   * SANDBOX_CASE_NETWORK=isolated: every case whose spec names no `docker_network` gets a network
   * of its own. Sealed cases get one whatever this says.
   */
  isolate: boolean;
  /** The worker's OTel collector port: opened on every non-sealed case network. */
  collectorPort: number;
  /** SANDBOX_HOST_PORTS: opened on every non-sealed case network too. */
  hostPorts: number[];
  /** `ports`: host ports the network opens from the start. */
  create(p: {
    runCaseId: number;
    experimentId: number;
    sealed: boolean;
    ports: number[];
  }): Promise<IsolatedNetwork>;
  /**
   * Removes the network `name` (and its firewall) if it is a case network of this deployment,
   * which an earlier attempt's container was on; any other network is left alone.
   */
  removeLeftover(name: string): Promise<void>;
}

export interface CaseNetworkDeps {
  collector: TelemetryIngest;
  /** The collector as case containers reach it (`{{mock.base_url}}` of a case without a gateway). */
  collectorUrl: string;
  gateways: CaseGateways;
  networks: CaseNetworks;
  /** MOCK_GATEWAY_SEALED: a case whose mock_config says passthrough=false gets a sealed network. */
  sealPassthroughFalse: boolean;
  /** OTEL_FLUSH_GRACE_MS: how long closing a case's network waits for its spans in flight. */
  flushGraceMs: number;
}

/** What the container of one case sees of the network: telemetry, the mock gateway, the sealing. */
export interface CaseNetwork {
  /** `{{mock.base_url}}`: the case's gateway when one runs, else the OTel collector. */
  mockBaseUrl: string;
  env: Record<string, string>;
  files: Array<{ path: string; content: string; mode: number }>;
  /** The case's own network, which the container must join instead of runtime_spec_json.docker_network. */
  network: string | undefined;
  /** What `host.docker.internal` must resolve to in the container (the host on the case's network). */
  hostAddress: string | undefined;
  /**
   * After start: untokened posts from these addresses belong to this case (agents of the original),
   * and they alone may use its gateway.
   */
  bindContainer(addresses: string[]): void;
  /**
   * After the container is gone: stop the gateway, wait until every span it sent is stored, revoke
   * the token, remove the case's network. `telemetryComplete` says whether that wait finished (then
   * no flush grace is needed).
   */
  close(): Promise<{ requests: RecordedRequest[]; telemetryComplete: boolean }>;
}

/** §5.2: the gateway runs for a case with a mock_config, or when the agent asks for it. */
function wantsGateway(spec: ResolvedCaseSpec, c: RunCaseInput): boolean {
  return c.mock_config !== null || spec.raw.mock_gateway === true;
}

/** What a case's own network is made with, when it gets one (createNetwork). */
export interface CaseNetworkPlan {
  sealed: boolean;
  /** Host ports the network opens from the start. */
  ports: number[];
}

/**
 * The case's network (issue 15): a sealed case's is internal (its gateway is its only way out); any
 * other case gets one of its own too unless its spec names a `docker_network` (the agent asked for
 * that network, and gets it as it is) or isolation is off. On its own network a case reaches the
 * host only at the worker's collector, its gateway, SANDBOX_HOST_PORTS and the spec's
 * `allow_host_ports`. undefined: no network of its own. Nothing in it is per case but the sealing,
 * so a warm sandbox's network is made from it ahead of its case (src/docker/warm-pool.ts).
 */
export function caseNetworkPlan(
  deps: Pick<CaseNetworkDeps, 'networks' | 'sealPassthroughFalse'>,
  p: { caseInput: RunCaseInput; spec: ResolvedCaseSpec },
): CaseNetworkPlan | undefined {
  const { networks } = deps;
  const { caseInput, spec } = p;
  const sealed = deps.sealPassthroughFalse && caseInput.mock_config?.passthrough === false;
  if (!sealed && (spec.dockerNetwork !== undefined || !networks.isolate)) return undefined;
  // Sealed, the gateway's port (opened when it listens) is the only one.
  const ports = sealed ? [] : [networks.collectorPort, ...networks.hostPorts, ...spec.allowHostPorts];
  return { sealed, ports: [...new Set(ports)] };
}

async function createNetwork(
  deps: CaseNetworkDeps,
  p: { request: ExperimentRunRequested; caseInput: RunCaseInput; spec: ResolvedCaseSpec; log: Logger },
): Promise<IsolatedNetwork | undefined> {
  const { caseInput, spec, log } = p;
  const plan = caseNetworkPlan(deps, p);
  if (plan === undefined) return undefined;
  if (plan.sealed && spec.dockerNetwork) {
    log.warn(
      { code: 'MOCK_GATEWAY_NETWORK_OVERRIDE', docker_network: spec.dockerNetwork },
      'sealed case: docker_network ignored',
    );
  }
  if (plan.sealed && spec.allowHostPorts.length > 0) {
    log.warn(
      { code: 'CASE_NETWORK_HOST_PORTS_IGNORED', allow_host_ports: spec.allowHostPorts },
      'sealed case: allow_host_ports ignored (its gateway is its only way out)',
    );
  }
  return deps.networks.create({
    runCaseId: caseInput.run_case_id,
    experimentId: p.request.experiment.id,
    sealed: plan.sealed,
    ports: plan.ports,
  });
}

/**
 * `network`: the case's own network made ahead of it (a warm sandbox's, made from the same
 * caseNetworkPlan); from here on it is the case's, closed and removed with it like one made here.
 */
export async function openCaseNetwork(
  deps: CaseNetworkDeps,
  p: {
    request: ExperimentRunRequested;
    caseInput: RunCaseInput;
    spec: ResolvedCaseSpec;
    log: Logger;
    network?: IsolatedNetwork;
  },
): Promise<CaseNetwork> {
  const { collector } = deps;
  const { request, caseInput, spec, log } = p;
  const token = collector.issueToken({
    runCaseId: caseInput.run_case_id,
    experimentId: request.experiment.id,
    dataItemId: caseInput.data_item_id,
  });
  let network: IsolatedNetwork | undefined;
  let gateway: CaseGateway | undefined;
  try {
    network = p.network ?? (await createNetwork(deps, p));
    if (wantsGateway(spec, caseInput)) {
      gateway = await deps.gateways.start({
        runCaseId: caseInput.run_case_id,
        config: caseInput.mock_config,
        network,
      });
    }
  } catch (err) {
    collector.revokeToken(token);
    await network?.remove().catch(() => undefined);
    throw err;
  }
  const collectorUrl = network
    ? `http://${network.gatewayIp}:${deps.networks.collectorPort}`
    : deps.collectorUrl;
  const mockBaseUrl = gateway?.baseUrl ?? collectorUrl;
  const caseNetwork = network;
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
    network: caseNetwork?.name,
    hostAddress: caseNetwork?.gatewayIp,
    bindContainer(addresses) {
      for (const ip of addresses) collector.bindSource(ip, token);
      gateway?.admit(addresses);
    },
    async close() {
      // Recorded URLs go to artifacts_json and the report: no `?api_key=…` in clear.
      const requests = (gateway?.requests() ?? []).map((r) => ({ ...r, url: redactUrl(r.url) }));
      try {
        await gateway?.close();
        const telemetryComplete = await collector.drain(deps.flushGraceMs);
        return { requests, telemetryComplete };
      } finally {
        collector.revokeToken(token);
        // The case's result must not be lost to a cleanup failure: the reaper removes what is left.
        await caseNetwork
          ?.remove()
          .catch((err: unknown) =>
            log.warn(
              { code: 'E_SANDBOX_NETWORK_REMOVE', network: caseNetwork.name, err: errorText(err) },
              'could not remove the case network; the reaper will',
            ),
          );
      }
    },
  };
}

/**
 * Why a case cannot be adopted from a killed worker by another attempt: what it relies on ran in
 * that worker's process and died with it. Its mock gateway does (and a sealed case, whose only way
 * out is its gateway, always has one): the agent's requests would go nowhere. null: nothing of the
 * case lives in the worker but its OTel token, which the adopting attempt takes over.
 */
export function workerBoundReason(spec: ResolvedCaseSpec, caseInput: RunCaseInput): string | null {
  return wantsGateway(spec, caseInput) ? 'its mock gateway ran in the worker that started it' : null;
}

/**
 * The network side of a container adopted from a killed worker (workerBoundReason said it may be):
 * the same `{{mock.base_url}}` the container was made with (its env), the case's ingest token taken
 * over so spans it still sends to this worker's collector are stored (same collector port, as in
 * production's fixed OTEL_COLLECTOR_PORT), and at the end its case network removed. Telemetry is
 * never complete: what it sent while no worker listened is lost, so the trajectory phase waits the
 * flush grace as usual.
 */
export function adoptCaseNetwork(
  deps: CaseNetworkDeps,
  p: {
    request: ExperimentRunRequested;
    caseInput: RunCaseInput;
    container: { env: Record<string, string>; networks: string[] };
    log: Logger;
  },
): CaseNetwork {
  const { collector } = deps;
  const { request, caseInput, container, log } = p;
  const token = ingestTokenOf(container.env);
  if (token !== undefined)
    collector.adoptToken(token, {
      runCaseId: caseInput.run_case_id,
      experimentId: request.experiment.id,
      dataItemId: caseInput.data_item_id,
    });
  return {
    mockBaseUrl: container.env.BENCHMARK_MOCK_BASE_URL ?? deps.collectorUrl,
    env: {},
    files: [],
    network: undefined,
    hostAddress: undefined,
    bindContainer(addresses) {
      if (token !== undefined) for (const ip of addresses) collector.bindSource(ip, token);
    },
    async close() {
      try {
        await collector.drain(deps.flushGraceMs);
        return { requests: [], telemetryComplete: false };
      } finally {
        if (token !== undefined) collector.revokeToken(token);
        for (const name of container.networks)
          await deps.networks
            .removeLeftover(name)
            .catch((err: unknown) =>
              log.warn(
                { code: 'E_SANDBOX_NETWORK_REMOVE', network: name, err: errorText(err) },
                'could not remove the case network; the reaper will',
              ),
            );
      }
    },
  };
}
