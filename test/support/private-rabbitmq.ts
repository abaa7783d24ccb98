import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './ports';

const exec = promisify(execFile);
const RABBITMQ_BIN = '/usr/lib/rabbitmq/bin';

/**
 * A RabbitMQ node of one test's own (own node name, ports and data directory under a temp dir), so
 * a test can stop and start a broker for real without touching the shared one other tests use.
 * Its data survives stop/start like a production node's: durable queues keep persistent messages.
 */
export interface PrivateRabbitMq {
  /** amqp URL of the node (guest/guest, loopback). */
  url: string;
  port: number;
  /** Halts the node: its port closes, connections drop. */
  stop(): Promise<void>;
  /** Starts it again on the same data; resolves once it accepts connections. */
  start(): Promise<void>;
  /** Stops it and removes its data directory. */
  destroy(): Promise<void>;
}

export async function startPrivateRabbitMq(): Promise<PrivateRabbitMq> {
  const dir = await mkdtemp(path.join(tmpdir(), 'agentbench-rabbitmq-'));
  const home = path.join(dir, 'home');
  await mkdir(home);
  const pluginsFile = path.join(dir, 'enabled_plugins');
  // No plugins: the host's management plugin would try to take the shared node's 15672.
  await writeFile(pluginsFile, '[].\n');
  const port = await freePort();
  const distPort = await freePort();
  const node = `agentbench-test-${randomBytes(4).toString('hex')}@localhost`;
  const env = {
    ...process.env,
    // The Erlang cookie lives in HOME: ours, so the shared node's cookie is never read or written.
    HOME: home,
    RABBITMQ_NODENAME: node,
    RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_MNESIA_BASE: path.join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: path.join(dir, 'log'),
    RABBITMQ_ENABLED_PLUGINS_FILE: pluginsFile,
    RABBITMQ_CONFIG_FILE: path.join(dir, 'rabbitmq'),
    RABBITMQ_PID_FILE: path.join(dir, 'rabbitmq.pid'),
  };
  const ctl = (...args: string[]) =>
    exec(path.join(RABBITMQ_BIN, 'rabbitmqctl'), ['-n', node, ...args], { env, timeout: 90_000 });
  let running = false;

  const start = async (): Promise<void> => {
    await new Promise<void>((resolve, reject) => {
      const child = spawn(path.join(RABBITMQ_BIN, 'rabbitmq-server'), ['-detached'], {
        env,
        stdio: 'ignore',
      });
      child.once('error', reject);
      child.once('exit', (code) =>
        code === 0 ? resolve() : reject(new Error(`rabbitmq-server -detached exited ${code}`)),
      );
    });
    await ctl('wait', '--timeout', '60', env.RABBITMQ_PID_FILE);
    running = true;
  };
  const stop = async (): Promise<void> => {
    if (!running) return;
    await ctl('stop');
    running = false;
  };
  await start();
  return {
    url: `amqp://guest:guest@127.0.0.1:${port}/%2F`,
    port,
    stop,
    start,
    async destroy() {
      await stop().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
