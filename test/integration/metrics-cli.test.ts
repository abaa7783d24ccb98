import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import amqp from 'amqplib';
import { amqpUrl } from '../../src/config';
import { deadLetterQueueName } from '../../bridge/dead-letter';
import { publishRaw } from '../support/platform';
import { httpGet, scrape } from '../support/prometheus-text';
import { freePort } from '../support/ports';
import { eventually, startStack, type Stack } from '../support/stack';

const BENCHCTL = path.resolve(__dirname, '../../src/cli/benchctl.ts');

interface Child {
  exited: Promise<number | null>;
  stderr: () => string;
  output: () => string;
  signal(sig: NodeJS.Signals): void;
}

/** `benchctl <command>` as a child process, as an operator (or k8s) runs it. */
function benchctl(command: 'worker' | 'bridge', env: Record<string, string>): Child {
  const child = spawn(process.execPath, ['--import', 'tsx', BENCHCTL, command], {
    env: { ...process.env, ...env, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { exited, stderr: () => err, output: () => out + err, signal: (sig) => void child.kill(sig) };
}

/** Resolves with the exit code, or fails the test (and kills the child) past the deadline. */
async function exitWithin(child: Child, ms: number): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      child.signal('SIGKILL');
      reject(new Error(`benchctl did not exit within ${ms} ms:\n${child.output()}`));
    }, ms);
  });
  try {
    return await Promise.race([child.exited, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Something else holding a port, as another process would. */
async function occupy(): Promise<{ port: number; close: () => Promise<void> }> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return { port, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

async function refused(url: string): Promise<boolean> {
  return httpGet(url).then(
    () => false,
    (err: NodeJS.ErrnoException) => err.code === 'ECONNREFUSED',
  );
}

describe('benchctl worker/bridge serve /metrics, /healthz and /readyz from start to shutdown', () => {
  const queue = `agentbench.metrics-cli.${randomBytes(4).toString('hex')}`;
  let stack: Stack;
  let env: Record<string, string>;

  before(async () => {
    stack = await startStack({ worker: false, env: { RABBITMQ_EXPERIMENT_QUEUE: queue } });
    env = { ...stack.env, METRICS_HOST: '127.0.0.1' };
  });

  after(async () => {
    const conn = await amqp.connect(amqpUrl(stack.config));
    const ch = await conn.createChannel();
    await ch.deleteQueue(queue);
    await ch.deleteQueue(deadLetterQueueName(queue));
    await conn.close();
    await stack?.stop();
  });

  test('a taken METRICS_PORT stops either command at once with one E_METRICS_PORT_IN_USE line', async () => {
    const taken = await occupy();
    try {
      for (const command of ['bridge', 'worker'] as const) {
        const child = benchctl(command, { ...env, METRICS_PORT: String(taken.port) });
        assert.equal(await exitWithin(child, 30_000), 1, child.output());
        assert.equal(
          child.stderr(),
          `benchctl: E_METRICS_PORT_IN_USE: METRICS_PORT=${taken.port} on 127.0.0.1 is already in use (set METRICS_PORT to a free port, or 0 to disable the endpoint)\n`,
        );
      }
      // The core's exporter is checked as early, before Docker, Postgres and Temporal are touched.
      const child = benchctl('worker', {
        ...env,
        METRICS_PORT: '0',
        TEMPORAL_METRICS_PORT: String(taken.port),
      });
      assert.equal(await exitWithin(child, 30_000), 1, child.output());
      assert.match(
        child.stderr(),
        new RegExp(
          `^benchctl: E_METRICS_PORT_IN_USE: TEMPORAL_METRICS_PORT=${taken.port} on 127\\.0\\.0\\.1 is already in use [^\\n]*\\n$`,
        ),
      );
    } finally {
      await taken.close();
    }
  });

  test('bridge: /metrics counts a real dead letter while running; SIGTERM stops the endpoint with the bridge', async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}/metrics`;
    const child = benchctl('bridge', { ...env, METRICS_PORT: String(port) });
    try {
      await eventually(
        async () => ((await scrape(url)).value('agentbench_bridge_connected') === 1 ? true : undefined),
        60_000,
        `bridge connected\n${child.output()}`,
      );
      await publishRaw(amqpUrl(stack.config), queue, '{ not json');
      const m = await eventually(
        async () => {
          const x = await scrape(url);
          return x.value('agentbench_bridge_dead_lettered_total', { code: 'E_MESSAGE_INVALID_JSON' }) === 1
            ? x
            : undefined;
        },
        30_000,
        'dead letter counted',
      );
      assert.equal(m.value('agentbench_bridge_messages_received_total'), 1);
      assert.equal(m.value('agentbench_bridge_redis_degraded'), 0);
      assert.equal((await httpGet(`http://127.0.0.1:${port}/healthz`)).body, 'ok\n');
      const ready = await httpGet(`http://127.0.0.1:${port}/readyz`);
      assert.equal(ready.status, 200, ready.body);
      assert.deepEqual(JSON.parse(ready.body), {
        status: 'ready',
        checks: { temporal: { ok: true }, rabbitmq: { ok: true }, postgres: { ok: true } },
      });
    } finally {
      child.signal('SIGTERM');
    }
    assert.equal(await exitWithin(child, 30_000), 0, child.output());
    assert.ok(await refused(url), 'the endpoint is gone with the process');
  });

  test('worker: our /metrics and the Temporal core’s exporter while serving; both closed after a SIGTERM drain', async () => {
    const [port, temporalPort] = [await freePort(), await freePort()];
    const url = `http://127.0.0.1:${port}/metrics`;
    const temporalUrl = `http://127.0.0.1:${temporalPort}/metrics`;
    const child = benchctl('worker', {
      ...env,
      METRICS_PORT: String(port),
      TEMPORAL_METRICS_PORT: String(temporalPort),
    });
    try {
      await eventually(
        async () => (child.output().includes('"WORKER_STARTED"') ? true : undefined),
        120_000,
        `worker start\n${child.output()}`,
      );
      const m = await scrape(url);
      assert.equal(m.value('agentbench_live_containers_limit'), stack.config.docker.maxLiveContainers);
      assert.equal(m.value('agentbench_live_containers'), 0);
      assert.ok(m.types.has('process_cpu_user_seconds_total'));
      const ready = await httpGet(`http://127.0.0.1:${port}/readyz`);
      assert.equal(ready.status, 200, ready.body);
      assert.deepEqual(JSON.parse(ready.body), {
        status: 'ready',
        checks: { temporal: { ok: true }, postgres: { ok: true }, docker: { ok: true } },
      });
      const core = await eventually(
        async () => {
          const res = await httpGet(temporalUrl);
          return res.status === 200 && /^temporal_/m.test(res.body) ? res.body : undefined;
        },
        30_000,
        'temporal core metrics',
      );
      assert.ok(!/^agentbench_/m.test(core), 'the core exporter serves only its own temporal_ metrics');
    } finally {
      child.signal('SIGTERM');
    }
    assert.equal(await exitWithin(child, 60_000), 0, child.output());
    assert.ok(await refused(url), 'our endpoint is gone with the process');
    assert.ok(await refused(temporalUrl), 'the core exporter is gone with the process');
  });
});
