import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type Dockerode from 'dockerode';
import { errorDetail, statusCode } from './errors';
import { LABELS } from './labels';

/**
 * A Docker bridge network of one case's own, from which its container reaches on the host exactly
 * the ports opened for it (the worker's collector, the case's mock gateway, what the agent spec
 * asks for), and no other case's container or gateway (issue 15).
 *
 * Why a network per case and not one shared bridge with `enable_icc=false`: that bridge is far
 * cheaper per case (two iptables calls ≈ 24 ms, against ≈ 250–320 ms for Docker's network create +
 * remove plus ≈ 26 ms for this firewall in one iptables-restore each way, on the loaded 2-core test
 * host; README "Case isolation on the network" has the pipeline's numbers), but it isolates less: its cases share one L2 segment (a container
 * with NET_RAW can ARP-spoof another's address, and IPv6 link-local traffic is not covered by
 * Docker's icc rule), a container's address is known only after it started (so per-case rules and
 * source checks would trail the agent's first packets), and a long-lived shared network needs an
 * owner to remove it. A per-case network is created, firewalled and removed with its case, before
 * the container exists. Cost: one of Docker's address pools per live case (31 by default; raise
 * `default-address-pools` in daemon.json for more than that many cases per host).
 *
 * Measured on this host (Docker 20.10, iptables-nft):
 *  - Docker's own isolation chains already drop traffic between two bridge networks, and a
 *    `sealed` network (`Internal: true`) stops all forwarding (no way out at all);
 *  - but the host owns the network's gateway IP on the bridge, and packets to ANY host address
 *    (the gateway IP, docker0's 172.17.0.1, the LAN IP) are local delivery, which Docker does not
 *    filter: every service the host listens on stays reachable. So an INPUT chain for the bridge
 *    accepts only TCP to gatewayIp:<opened port> and rejects the rest (TCP reset, ICMP
 *    unreachable), and IPv6 from the bridge is dropped;
 *  - a non-sealed network forwards to the world (NAT), including the cloud metadata address
 *    169.254.169.254: DOCKER-USER (Docker's chain for such rules, run before its own) rejects
 *    link-local destinations from the bridge.
 * Needs root (CAP_NET_ADMIN) and the `iptables` binary of the backend Docker uses; creation fails
 * rather than isolate half-way. DNS: Docker's embedded resolver (in the container's own namespace).
 */

export interface IsolatedNetwork {
  name: string;
  /** Host interface of the network. */
  bridge: string;
  /** The host's address on the network: where opened ports are reached (and `host.docker.internal`). */
  gatewayIp: string;
  /** `Internal`: no forwarding at all; the opened host ports are the only way out. */
  sealed: boolean;
  /** Whether `ip` is a container's address on this network (only its own case's container is on it). */
  contains(ip: string): boolean;
  /** Lets containers on the network open TCP connections to gatewayIp:port. */
  allowHostPort(port: number): Promise<void>;
  /** Disconnects what is still attached, removes the firewall rules and the network. Idempotent. */
  remove(): Promise<void>;
}

/** On every network made here; the value says whether it is sealed. */
const CASE_NETWORK_LABEL = 'io.agentbench.case-network';
const BRIDGE_NAME_OPTION = 'com.docker.network.bridge.name';
/** Linux interface names are at most 15 characters: `abm` + 12 hex. */
const BRIDGE_PREFIX = 'abm';
const CHAIN_PREFIX = 'AGENTBENCH-';
/** Link-local: the cloud metadata services (169.254.169.254, 169.254.170.2, …). */
const METADATA_RANGE = '169.254.0.0/16';
const FIREWALL_TIMEOUT_MS = 10_000;

export class IsolatedNetworkError extends Error {
  readonly code = 'E_SANDBOX_NETWORK';
  constructor(detail: string, options?: { cause?: unknown }) {
    super(`E_SANDBOX_NETWORK: ${detail}`, options);
    this.name = 'IsolatedNetworkError';
  }
}

/** `input`: what the command reads on stdin (iptables-restore). */
function run(file: string, args: string[], input?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { timeout: FIREWALL_TIMEOUT_MS }, (err, _stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve();
    });
    // A command that fails at once closes its stdin: its exit status says why, not the EPIPE.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input);
  });
}

/**
 * Applies `rules` (iptables arguments, e.g. `['-A', chain, …]`) to the filter table in one
 * transaction: each iptables exec costs ~12 ms here, and a case network needs about ten rules.
 * `-w`: wait for the xtables lock instead of failing while dockerd edits rules.
 */
function applyRules(rules: string[][], newChains: string[] = []): Promise<void> {
  const lines = [
    '*filter',
    ...newChains.map((c) => `:${c} - [0:0]`),
    ...rules.map((r) => r.join(' ')),
    'COMMIT',
    '',
  ];
  return run('iptables-restore', ['-w', '--noflush'], lines.join('\n'));
}

function chainOf(bridge: string): string {
  return `${CHAIN_PREFIX}${bridge}`;
}

/** The DOCKER-USER rules of a non-sealed network (also what removeFirewall deletes). */
function metadataRules(bridge: string): string[][] {
  const match = ['-i', bridge, '-d', METADATA_RANGE];
  return [
    [...match, '-p', 'tcp', '-j', 'REJECT', '--reject-with', 'tcp-reset'],
    [...match, '-j', 'REJECT', '--reject-with', 'icmp-net-unreachable'],
  ];
}

function acceptRule(bridge: string, gatewayIp: string, port: number): string[] {
  return ['-A', chainOf(bridge), '-p', 'tcp', '-d', gatewayIp, '--dport', String(port), '-j', 'ACCEPT'];
}

async function installFirewall(
  bridge: string,
  sealed: boolean,
  gatewayIp: string,
  ports: number[],
): Promise<void> {
  const chain = chainOf(bridge);
  await applyRules(
    [
      ...ports.map((port) => acceptRule(bridge, gatewayIp, port)),
      ['-A', chain, '-p', 'tcp', '-j', 'REJECT', '--reject-with', 'tcp-reset'],
      ['-A', chain, '-j', 'REJECT', '--reject-with', 'icmp-port-unreachable'],
      ['-I', 'INPUT', '-i', bridge, '-j', chain],
      // Each insert goes first, so the rules go in last to first.
      ...(sealed
        ? []
        : metadataRules(bridge)
            .reverse()
            .map((rule) => ['-I', 'DOCKER-USER', ...rule])),
    ],
    [chain],
  );
  // Containers on a network without IPv6 get it disabled by Docker; this only covers hosts that differ.
  await run('ip6tables', ['-w', '-I', 'INPUT', '-i', bridge, '-j', 'DROP']).catch(() => undefined);
}

/**
 * Removes what installFirewall added: in one transaction when all of it is there, else step by
 * step, every step run even if another failed or was never done.
 */
async function removeFirewall(bridge: string, sealed: boolean): Promise<void> {
  const chain = chainOf(bridge);
  await run('ip6tables', ['-w', '-D', 'INPUT', '-i', bridge, '-j', 'DROP']).catch(() => undefined);
  const whole = [
    ['-D', 'INPUT', '-i', bridge, '-j', chain],
    ['-F', chain],
    ['-X', chain],
    ...(sealed ? [] : metadataRules(bridge).map((rule) => ['-D', 'DOCKER-USER', ...rule])),
  ];
  if (
    await applyRules(whole).then(
      () => true,
      () => false,
    )
  )
    return;
  const steps: Array<[string, string[]]> = [
    ['iptables', ['-w', '-D', 'INPUT', '-i', bridge, '-j', chain]],
    ['iptables', ['-w', '-F', chain]],
    ['iptables', ['-w', '-X', chain]],
    ...metadataRules(bridge).map((rule): [string, string[]] => [
      'iptables',
      ['-w', '-D', 'DOCKER-USER', ...rule],
    ]),
  ];
  for (const [file, args] of steps) await run(file, args).catch(() => undefined);
}

/**
 * The removal is tried first: at a case's end its container is already gone, so the network has
 * nothing attached and one call does it (bench/sandbox-overhead counts the calls per case). Only a
 * refusal (active endpoints: a crashed worker's leftover, a container still being removed) costs
 * the inspect and the forced disconnects before the second try.
 */
async function removeDockerNetwork(docker: Dockerode, name: string): Promise<void> {
  const network = docker.getNetwork(name);
  try {
    await network.remove();
    return;
  } catch (err) {
    if (statusCode(err) === 404) return;
  }
  let info: { Containers?: Record<string, unknown> };
  try {
    info = (await network.inspect()) as typeof info;
  } catch (err) {
    if (statusCode(err) === 404) return;
    throw err;
  }
  for (const containerId of Object.keys(info.Containers ?? {})) {
    await network.disconnect({ Container: containerId, Force: true }).catch(() => undefined);
  }
  try {
    await network.remove();
  } catch (err) {
    if (statusCode(err) !== 404) throw err;
  }
}

/** `a.b.c.d/n` → a BlockList holding that subnet, used as an allow list. */
function subnetList(subnet: string): net.BlockList {
  const [address, prefix] = subnet.split('/');
  const list = new net.BlockList();
  if (address && net.isIPv4(address) && prefix !== undefined) list.addSubnet(address, Number(prefix), 'ipv4');
  return list;
}

/** Servers bound to IPv4 see IPv4 peers; a dual-stack one may report them IPv4-mapped. */
function plainIPv4(ip: string): string {
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}

interface IsolatedNetworkParams {
  name: string;
  /** Ours (managed, deployment, case-network) are added and win. */
  labels: Record<string, string>;
  /** Config.deploymentId: which deployment's reaper may remove it. */
  deploymentId: string;
  sealed: boolean;
  /** Host ports opened from the start (allowHostPort opens more later). */
  ports?: number[];
}

/** Creates the network and its default-deny firewall before anything can attach to it. */
export async function createIsolatedNetwork(
  docker: Dockerode,
  p: IsolatedNetworkParams,
): Promise<IsolatedNetwork> {
  const { name, sealed } = p;
  const bridge = `${BRIDGE_PREFIX}${randomBytes(6).toString('hex')}`;
  let gatewayIp: string | undefined;
  let subnet: string | undefined;
  try {
    const network = await docker.createNetwork({
      Name: name,
      Driver: 'bridge',
      Internal: sealed,
      CheckDuplicate: true,
      Options: { [BRIDGE_NAME_OPTION]: bridge },
      Labels: {
        ...p.labels,
        [LABELS.managed]: 'true',
        [LABELS.deployment]: p.deploymentId,
        [LABELS.createdAt]: new Date().toISOString(),
        [CASE_NETWORK_LABEL]: sealed ? 'sealed' : 'isolated',
      },
    });
    const info = (await network.inspect()) as {
      IPAM?: { Config?: Array<{ Gateway?: string; Subnet?: string }> };
    };
    const ipv4 = info.IPAM?.Config?.find((c) => c.Gateway && net.isIPv4(c.Gateway));
    gatewayIp = ipv4?.Gateway;
    subnet = ipv4?.Subnet;
    if (!gatewayIp || !subnet) throw new Error(`network ${name} has no IPv4 gateway and subnet`);
    await installFirewall(bridge, sealed, gatewayIp, p.ports ?? []);
  } catch (err) {
    await removeFirewall(bridge, sealed);
    await removeDockerNetwork(docker, name).catch(() => undefined);
    throw new IsolatedNetworkError(`could not create the case network ${name}: ${errorDetail(err)}`, {
      cause: err,
    });
  }
  const ip = gatewayIp;
  const members = subnetList(subnet);

  return {
    name,
    bridge,
    gatewayIp: ip,
    sealed,
    contains(address) {
      const peer = plainIPv4(address);
      return net.isIPv4(peer) && peer !== ip && members.check(peer, 'ipv4');
    },
    async allowHostPort(port) {
      try {
        await run('iptables', [
          '-w',
          '-I',
          chainOf(bridge),
          '1',
          '-p',
          'tcp',
          '-d',
          ip,
          '--dport',
          String(port),
          '-j',
          'ACCEPT',
        ]);
      } catch (err) {
        throw new IsolatedNetworkError(`could not open ${ip}:${port} on ${name}: ${errorDetail(err)}`, {
          cause: err,
        });
      }
    },
    async remove() {
      // Network first: while it exists, its bridge exists, and a container on it must stay isolated.
      await removeDockerNetwork(docker, name);
      await removeFirewall(bridge, sealed);
    },
  };
}

/**
 * Removes case networks left behind by a crashed worker of this deployment: older than `minAgeMs`
 * and with no container attached (a live case's container keeps its network), with their rules.
 */
export async function reapIsolatedNetworks(
  docker: Dockerode,
  p: { deploymentId: string; minAgeMs: number },
): Promise<string[]> {
  const networks = await docker.listNetworks({
    filters: { label: [CASE_NETWORK_LABEL, `${LABELS.deployment}=${p.deploymentId}`] },
  });
  const removed: string[] = [];
  for (const summary of networks) {
    const info = await inspectNetwork(docker, summary.Id);
    if (!info) continue;
    const age = Date.now() - Date.parse(info.Created ?? '');
    if (!(age >= p.minAgeMs) || Object.keys(info.Containers ?? {}).length > 0) continue;
    await removeInspected(docker, info);
    removed.push(info.Name);
  }
  return removed;
}

interface NetworkInfo {
  Name: string;
  Created?: string;
  Containers?: Record<string, unknown>;
  Options?: Record<string, string>;
  Labels?: Record<string, string>;
}

function inspectNetwork(docker: Dockerode, idOrName: string): Promise<NetworkInfo | null> {
  return docker
    .getNetwork(idOrName)
    .inspect()
    .then(
      (info) => info as NetworkInfo,
      () => null,
    );
}

async function removeInspected(docker: Dockerode, info: NetworkInfo): Promise<void> {
  await removeDockerNetwork(docker, info.Name);
  const bridge = info.Options?.[BRIDGE_NAME_OPTION];
  if (bridge?.startsWith(BRIDGE_PREFIX))
    await removeFirewall(bridge, info.Labels?.[CASE_NETWORK_LABEL] === 'sealed');
}

/**
 * Removes one case network of this deployment by name, with its firewall: the one an earlier
 * attempt's container was on (that attempt's worker died before it could). Any other network
 * (the spec's `docker_network`, Docker's bridge, another deployment's) is left alone.
 */
export async function removeCaseNetwork(
  docker: Dockerode,
  p: { name: string; deploymentId: string },
): Promise<void> {
  const info = await inspectNetwork(docker, p.name);
  if (!info?.Labels?.[CASE_NETWORK_LABEL] || info.Labels[LABELS.deployment] !== p.deploymentId) return;
  await removeInspected(docker, info);
}
