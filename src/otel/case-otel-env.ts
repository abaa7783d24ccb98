import { DATA_ITEM_ID_KEY, EXPERIMENT_ID_KEY, RUN_CASE_ID_KEY } from '../domain/otlp-rows';

/**
 * The OTEL_* env a case container gets (ARCHITECTURE §5.6), and how it meets the agent's own.
 * Ours must win only where the case's telemetry depends on it: where spans go (the endpoint,
 * a protocol the collector speaks), the ingest token header, and the benchmark.* resource
 * attributes that tie spans to the case. Everything else the agent already set stays its own:
 * its other resource attributes and headers are kept beside ours (the lists are merged key by
 * key), and its service name, exporters and batch settings win over our defaults.
 */

export const INGEST_TOKEN_HEADER = 'x-agentbench-ingest-token';

/**
 * The OTEL_* env of a case container: standard SDK configuration, so an agent built on any OTel
 * SDK exports to the collector, tagged with its case, without code changes. `endpoint` is the
 * base URL (SDKs append /v1/traces and /v1/logs).
 */
export function caseOtelEnv(p: {
  endpoint: string;
  token: string;
  serviceName: string;
  runCaseId: number;
  experimentId: number;
  dataItemId: number;
}): Record<string, string> {
  return {
    OTEL_EXPORTER_OTLP_ENDPOINT: p.endpoint.replace(/\/+$/, ''),
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
    OTEL_EXPORTER_OTLP_HEADERS: `${INGEST_TOKEN_HEADER}=${p.token}`,
    OTEL_SERVICE_NAME: p.serviceName,
    OTEL_RESOURCE_ATTRIBUTES: [
      `${RUN_CASE_ID_KEY}=${p.runCaseId}`,
      `${EXPERIMENT_ID_KEY}=${p.experimentId}`,
      `${DATA_ITEM_ID_KEY}=${p.dataItemId}`,
    ].join(','),
    OTEL_TRACES_EXPORTER: 'otlp',
    OTEL_LOGS_EXPORTER: 'otlp',
    OTEL_METRICS_EXPORTER: 'none',
    // SDK defaults batch for 5 s (spans) / 1 s (logs); an agent that stays up after answering
    // would otherwise hold its last spans past the case's flush grace.
    OTEL_BSP_SCHEDULE_DELAY: '500',
    OTEL_BLRP_SCHEDULE_DELAY: '500',
  };
}

/** `key=value,key2=value2` (the OTel spec's list syntax) → entries in order; blank keys dropped. */
function parseList(text: string | undefined): Map<string, string> {
  const entries = new Map<string, string>();
  for (const part of (text ?? '').split(',')) {
    const at = part.indexOf('=');
    if (at <= 0) continue;
    const key = part.slice(0, at).trim();
    if (key !== '') entries.set(key, part.slice(at + 1).trim());
  }
  return entries;
}

function formatList(entries: Map<string, string>): string {
  return [...entries].map(([k, v]) => `${k}=${v}`).join(',');
}

/** Theirs, with our entries added and winning where both have a key. */
function mergedList(theirs: string | undefined, ours: string | undefined): string {
  const merged = parseList(theirs);
  for (const [key, value] of parseList(ours)) merged.set(key, value);
  return formatList(merged);
}

const SPEAKABLE_PROTOCOLS = new Set(['http/protobuf', 'http/json']);
const SIGNALS = [
  ['TRACES', 'traces'],
  ['LOGS', 'logs'],
] as const;
/** Our defaults that an agent's own value replaces. */
const AGENT_MAY_OVERRIDE = [
  'OTEL_SERVICE_NAME',
  'OTEL_TRACES_EXPORTER',
  'OTEL_LOGS_EXPORTER',
  'OTEL_METRICS_EXPORTER',
  'OTEL_BSP_SCHEDULE_DELAY',
  'OTEL_BLRP_SCHEDULE_DELAY',
] as const;

/**
 * The container env: the agent's own (`agent`: the runtime spec's env, the image's ENV) with
 * ours (`ours`, from caseOtelEnv) merged in. Keys neither OTEL_* list nor ours pass unchanged.
 */
export function mergeCaseOtelEnv(
  agent: Readonly<Record<string, string>>,
  ours: Readonly<Record<string, string>>,
): Record<string, string> {
  const env: Record<string, string> = { ...agent, ...ours };
  env.OTEL_RESOURCE_ATTRIBUTES = mergedList(agent.OTEL_RESOURCE_ATTRIBUTES, ours.OTEL_RESOURCE_ATTRIBUTES);
  env.OTEL_EXPORTER_OTLP_HEADERS = mergedList(
    agent.OTEL_EXPORTER_OTLP_HEADERS,
    ours.OTEL_EXPORTER_OTLP_HEADERS,
  );
  if (env.OTEL_RESOURCE_ATTRIBUTES === '') delete env.OTEL_RESOURCE_ATTRIBUTES;
  if (env.OTEL_EXPORTER_OTLP_HEADERS === '') delete env.OTEL_EXPORTER_OTLP_HEADERS;
  for (const key of AGENT_MAY_OVERRIDE) {
    const theirs = agent[key];
    if (theirs !== undefined && theirs !== '') env[key] = theirs;
  }
  // OTEL_SERVICE_NAME beats a service.name resource attribute: ours must not hide the agent's.
  if (
    agent.OTEL_SERVICE_NAME === undefined &&
    parseList(agent.OTEL_RESOURCE_ATTRIBUTES).has('service.name')
  ) {
    delete env.OTEL_SERVICE_NAME;
  }
  const protocol = agent.OTEL_EXPORTER_OTLP_PROTOCOL;
  if (protocol !== undefined && SPEAKABLE_PROTOCOLS.has(protocol)) env.OTEL_EXPORTER_OTLP_PROTOCOL = protocol;
  // A signal's own settings beat the general ones in every SDK: where the agent set them, they
  // must lead to us too (endpoint, token header, a protocol we speak).
  const endpoint = ours.OTEL_EXPORTER_OTLP_ENDPOINT;
  for (const [upper, path] of SIGNALS) {
    const endpointKey = `OTEL_EXPORTER_OTLP_${upper}_ENDPOINT`;
    if (agent[endpointKey] !== undefined && endpoint !== undefined)
      env[endpointKey] = `${endpoint}/v1/${path}`;
    const headersKey = `OTEL_EXPORTER_OTLP_${upper}_HEADERS`;
    if (agent[headersKey] !== undefined)
      env[headersKey] = mergedList(agent[headersKey], ours.OTEL_EXPORTER_OTLP_HEADERS);
    const protocolKey = `OTEL_EXPORTER_OTLP_${upper}_PROTOCOL`;
    const own = agent[protocolKey];
    if (own !== undefined && !SPEAKABLE_PROTOCOLS.has(own))
      env[protocolKey] = env.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf';
  }
  return env;
}

/** The case's ingest token in a container env made by mergeCaseOtelEnv (an adopted container's). */
export function ingestTokenOf(env: Readonly<Record<string, string>>): string | undefined {
  const token = parseList(env.OTEL_EXPORTER_OTLP_HEADERS).get(INGEST_TOKEN_HEADER);
  return token === undefined || token === '' ? undefined : token;
}
