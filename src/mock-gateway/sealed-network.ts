import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type Dockerode from 'dockerode';
import { errorDetail, statusCode } from '../docker/docker-sandbox';

/**
 * A per-case Docker network from which a container reaches exactly one thing: its mock gateway's
 * port on the host. Measured on this host (Docker 20.10, iptables-nft), two layers are needed:
 *  - `Internal: true` stops forwarding (no route out: 1.1.1.1 times out, other networks unreachable);
 *  - but the host still owns the network's gateway IP on the bridge, and packets to ANY host
 *    address (the gateway IP, docker0's 172.17.0.1 = host.docker.internal, the LAN IP) are local
 *    delivery, which Docker does not filter: every service the host listens on stays reachable.
 *    So an INPUT chain for the bridge accepts only TCP to gatewayIp:<allowed port> and rejects the
 *    rest (TCP reset, ICMP unreachable), and IPv6 from the bridge is dropped.
 * The gateway listener binds to gatewayIp and is advertised by it. Needs root (CAP_NET_ADMIN) and
 * the `iptables` binary of the backend Docker uses; creation fails rather than seal half-way.
 * DNS: Docker's embedded resolver answers container names only on internal networks.
 */

export interface SealedNetwork {
  name: string;
  /** Host interface of the network. */
  bridge: string;
  gatewayIp: string;
  /** Lets containers on the network open TCP connections to gatewayIp:port; until then they reach nothing. */
  allowGatewayPort(port: number): Promise<void>;
  /** Disconnects what is still attached, removes the firewall rules and the network. Idempotent. */
  remove(): Promise<void>;
}

export const SEALED_NETWORK_LABEL = 'io.agentbench.mock-network';
const BRIDGE_NAME_OPTION = 'com.docker.network.bridge.name';
/** Linux interface names are at most 15 characters: `abm` + 12 hex. */
const BRIDGE_PREFIX = 'abm';
const CHAIN_PREFIX = 'AGENTBENCH-';
const FIREWALL_TIMEOUT_MS = 10_000;

export class SealedNetworkError extends Error {
  readonly code = 'E_MOCK_SEALED_NETWORK';
  constructor(detail: string, options?: { cause?: unknown }) {
    super(`E_MOCK_SEALED_NETWORK: ${detail}`, options);
    this.name = 'SealedNetworkError';
  }
}

function run(file: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: FIREWALL_TIMEOUT_MS }, (err, _stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve();
    });
  });
}

function chainOf(bridge: string): string {
  return `${CHAIN_PREFIX}${bridge}`;
}

/** iptables `-w`: wait for the xtables lock instead of failing while dockerd edits rules. */
async function installFirewall(bridge: string): Promise<void> {
  const chain = chainOf(bridge);
  await run('iptables', ['-w', '-N', chain]);
  await run('iptables', ['-w', '-A', chain, '-p', 'tcp', '-j', 'REJECT', '--reject-with', 'tcp-reset']);
  await run('iptables', ['-w', '-A', chain, '-j', 'REJECT', '--reject-with', 'icmp-port-unreachable']);
  await run('iptables', ['-w', '-I', 'INPUT', '-i', bridge, '-j', chain]);
  // Containers on a network without IPv6 get it disabled by Docker; this only covers hosts that differ.
  await run('ip6tables', ['-w', '-I', 'INPUT', '-i', bridge, '-j', 'DROP']).catch(() => undefined);
}

/** Removes what installFirewall added; every step runs even if another already failed or was never done. */
async function removeFirewall(bridge: string): Promise<void> {
  const chain = chainOf(bridge);
  const steps: Array<[string, string[]]> = [
    ['iptables', ['-w', '-D', 'INPUT', '-i', bridge, '-j', chain]],
    ['iptables', ['-w', '-F', chain]],
    ['iptables', ['-w', '-X', chain]],
    ['ip6tables', ['-w', '-D', 'INPUT', '-i', bridge, '-j', 'DROP']],
  ];
  for (const [file, args] of steps) await run(file, args).catch(() => undefined);
}

async function removeDockerNetwork(docker: Dockerode, name: string): Promise<void> {
  const network = docker.getNetwork(name);
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

/** Creates the internal network and its default-deny firewall before anything can attach to it. */
export async function createSealedNetwork(
  docker: Dockerode,
  name: string,
  labels: Record<string, string> = {},
): Promise<SealedNetwork> {
  const bridge = `${BRIDGE_PREFIX}${randomBytes(6).toString('hex')}`;
  let gatewayIp: string | undefined;
  try {
    const network = await docker.createNetwork({
      Name: name,
      Driver: 'bridge',
      Internal: true,
      CheckDuplicate: true,
      Options: { [BRIDGE_NAME_OPTION]: bridge },
      Labels: { ...labels, [SEALED_NETWORK_LABEL]: 'true' },
    });
    const info = (await network.inspect()) as { IPAM?: { Config?: Array<{ Gateway?: string }> } };
    gatewayIp = info.IPAM?.Config?.find((c) => c.Gateway)?.Gateway;
    if (!gatewayIp) throw new Error(`network ${name} has no IPv4 gateway`);
    await installFirewall(bridge);
  } catch (err) {
    await removeFirewall(bridge);
    await removeDockerNetwork(docker, name).catch(() => undefined);
    throw new SealedNetworkError(`could not create sealed network ${name}: ${errorDetail(err)}`, {
      cause: err,
    });
  }
  const ip = gatewayIp;

  return {
    name,
    bridge,
    gatewayIp: ip,
    async allowGatewayPort(port) {
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
        throw new SealedNetworkError(`could not open ${ip}:${port} on ${name}: ${errorDetail(err)}`, {
          cause: err,
        });
      }
    },
    async remove() {
      // Network first: while it exists, its bridge exists, and a container on it must stay sealed.
      await removeDockerNetwork(docker, name);
      await removeFirewall(bridge);
    },
  };
}

/**
 * Removes sealed networks left behind by a crashed worker: older than `minAgeMs` and with no
 * container attached (a live case's container keeps its network).
 */
export async function reapSealedNetworks(docker: Dockerode, minAgeMs: number): Promise<string[]> {
  const networks = await docker.listNetworks({ filters: { label: [`${SEALED_NETWORK_LABEL}=true`] } });
  const removed: string[] = [];
  for (const summary of networks) {
    const info = (await docker
      .getNetwork(summary.Id)
      .inspect()
      .catch(() => null)) as {
      Name: string;
      Created?: string;
      Containers?: Record<string, unknown>;
      Options?: Record<string, string>;
    } | null;
    if (!info) continue;
    const age = Date.now() - Date.parse(info.Created ?? '');
    if (!(age >= minAgeMs) || Object.keys(info.Containers ?? {}).length > 0) continue;
    await removeDockerNetwork(docker, info.Name);
    const bridge = info.Options?.[BRIDGE_NAME_OPTION];
    if (bridge?.startsWith(BRIDGE_PREFIX)) await removeFirewall(bridge);
    removed.push(info.Name);
  }
  return removed;
}
