import os from 'node:os';
import type Dockerode from 'dockerode';

/**
 * The host's address on Docker's default bridge (docker0, usually 172.17.0.1): what
 * `host.docker.internal:host-gateway` resolves to in containers, and the address a gateway listener
 * should bind to so that containers reach it while the LAN does not (the original listened on
 * 0.0.0.0, an open proxy, CONTRACT §13.8). The daemon's IPAM config does not always name the
 * gateway, and Node lists the bridge interface only while a container is attached (libuv skips
 * interfaces that are not running), so the last resort is the subnet's first address, which is
 * what dockerd assigns to docker0 unless `--bip` says otherwise (and then IPAM names it).
 */
export async function dockerHostAddress(docker: Dockerode): Promise<string> {
  const info = (await docker.getNetwork('bridge').inspect()) as {
    IPAM?: { Config?: Array<{ Gateway?: string; Subnet?: string }> };
    Options?: Record<string, string>;
  };
  const configs = info.IPAM?.Config ?? [];
  const configured = configs.find((c) => c.Gateway)?.Gateway;
  if (configured) return configured;
  const bridge = info.Options?.['com.docker.network.bridge.name'] ?? 'docker0';
  const listed = os.networkInterfaces()[bridge]?.find((a) => a.family === 'IPv4')?.address;
  if (listed) return listed;
  const subnet = configs
    .map((c) => /^(\d+)\.(\d+)\.(\d+)\.(\d+)\/\d+$/.exec(c.Subnet ?? ''))
    .find((m) => m !== null);
  if (!subnet)
    throw new Error(`E_MOCK_GATEWAY_BIND: cannot tell the host's address on Docker's bridge ${bridge}`);
  return `${subnet[1]}.${subnet[2]}.${subnet[3]}.${Number(subnet[4]) + 1}`;
}
