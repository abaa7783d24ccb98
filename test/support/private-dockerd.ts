import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { openSync, closeSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { processAlive, waitFor } from './process-wait';

const exec = promisify(execFile);

/**
 * A dockerd of one test's own: own --data-root, --exec-root (so its own containerd), --pidfile,
 * socket and Linux bridge, iptables off, so a test can restart a Docker daemon for real while the
 * shared one keeps serving everyone else. Images are imported from the shared daemon
 * (`docker save | docker -H … load`): no registry needed.
 */
export interface PrivateDockerd {
  socketPath: string;
  /** SIGTERM: dockerd stops its containers (no live-restore) and exits, as `systemctl restart docker` does. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  start(): Promise<void>;
  destroy(): Promise<void>;
}

async function unusedSubnet(): Promise<number> {
  const { stdout } = await exec('ip', ['-4', '-o', 'addr']);
  for (;;) {
    const octet = 64 + Math.floor(Math.random() * 190);
    if (!stdout.includes(`172.31.${octet}.`)) return octet;
  }
}

/**
 * The shared daemon's default bridge, as addresses to put back. A dockerd started with
 * --default-address-pool over a data root that already holds a default bridge network (every
 * restart) deletes the interface named `docker0` — by name, whoever's it is (moby's
 * removeDefaultBridgeInterface). In one network namespace that is the shared daemon's bridge, and
 * every later container on its default network fails to start. The pool itself is needed (below).
 */
async function docker0Addresses(): Promise<string[]> {
  const { stdout } = await exec('ip', ['-4', '-o', 'addr', 'show', 'dev', 'docker0']).catch(() => ({
    stdout: '',
  }));
  return [...stdout.matchAll(/inet (\S+)/g)].map((m) => m[1] ?? '').filter(Boolean);
}

async function restoreDocker0(addresses: string[]): Promise<void> {
  if (addresses.length === 0) return;
  const present = await exec('ip', ['link', 'show', 'docker0']).then(
    () => true,
    () => false,
  );
  if (present) return;
  await exec('ip', ['link', 'add', 'docker0', 'type', 'bridge']);
  for (const a of addresses) await exec('ip', ['addr', 'add', a, 'dev', 'docker0']);
  await exec('ip', ['link', 'set', 'docker0', 'up']);
}

export async function startPrivateDockerd(opts: { images: string[] }): Promise<PrivateDockerd> {
  const tag = randomBytes(3).toString('hex');
  const dir = await mkdtemp(path.join(tmpdir(), 'agentbench-dockerd-'));
  const socketPath = `/tmp/chaos-docker-${tag}.sock`;
  const bridge = `chaos${tag}`;
  const octet = await unusedSubnet();
  await exec('ip', ['link', 'add', bridge, 'type', 'bridge']);
  await exec('ip', ['addr', 'add', `172.31.${octet}.1/24`, 'dev', bridge]);
  await exec('ip', ['link', 'set', bridge, 'up']);
  // Its own (empty) daemon.json: the host's /etc/docker/daemon.json belongs to the shared daemon.
  const configFile = path.join(dir, 'daemon.json');
  await writeFile(configFile, '{}\n');
  const docker = (...args: string[]) =>
    exec('docker', ['-H', `unix://${socketPath}`, ...args], { timeout: 60_000 });
  let child: ChildProcess | null = null;
  const start = async () => {
    const sharedBridge = await docker0Addresses();
    const log = openSync(path.join(dir, 'dockerd.log'), 'a');
    try {
      child = spawn(
        'dockerd',
        [
          '--config-file',
          configFile,
          '--data-root',
          path.join(dir, 'data'),
          '--exec-root',
          path.join(dir, 'exec'),
          '--pidfile',
          path.join(dir, 'dockerd.pid'),
          '-H',
          `unix://${socketPath}`,
          '--bridge',
          bridge,
          '--iptables=false',
          '--ip-masq=false',
          // Every case gets a network of its own: Docker's default pools hold ~31 networks and are
          // shared with the host's other bridges (the shared daemon's case networks), so a private
          // daemon gets a range of its own with room for 256.
          '--default-address-pool',
          'base=10.213.0.0/16,size=24',
        ],
        { stdio: ['ignore', log, log] },
      );
    } finally {
      closeSync(log);
    }
    await waitFor(
      `private dockerd at ${socketPath}`,
      () =>
        docker('version').then(
          () => true,
          () => false,
        ),
      60_000,
    );
    await restoreDocker0(sharedBridge);
  };
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    const c = child;
    if (!c || c.exitCode !== null || c.pid === undefined) return;
    const pid = c.pid;
    c.kill(signal);
    await waitFor(
      `dockerd ${pid} to exit`,
      () => c.exitCode !== null || c.signalCode !== null || !processAlive(pid),
      60_000,
    );
    child = null;
  };
  await start();
  for (const image of opts.images) {
    // Through a shell: a pipe between two docker clients, the shared daemon only read.
    await exec('sh', ['-c', `docker save ${image} | docker -H unix://${socketPath} load`], {
      timeout: 120_000,
    });
  }
  return {
    socketPath,
    start,
    stop,
    async destroy() {
      await docker('ps', '-aq')
        .then(({ stdout }) => {
          const ids = stdout.split('\n').filter(Boolean);
          return ids.length > 0 ? docker('rm', '-f', ...ids) : undefined;
        })
        .catch(() => undefined);
      // Case networks left by a killed worker: a stopped daemon leaves their bridges on the host.
      await docker('network', 'prune', '-f').catch(() => undefined);
      await stop().catch(() => undefined);
      await exec('ip', ['link', 'del', bridge]).catch(() => undefined);
      await rm(dir, { recursive: true, force: true }).catch(() => undefined);
      await rm(socketPath, { force: true });
    },
  };
}
