import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config';
import { createDockerClient } from '../../src/docker/docker-client';
import { connectTemporalClient } from '../../src/temporal/connection';
import { createCaseWorker } from '../../src/temporal/case-worker';
import { createTestDatabase } from '../support/database';
import { captureLogger, localTestEnv } from '../support/stack';

/**
 * Docker going away while a worker starts (issue 13 item 7: it crashed with `write EPIPE`). A
 * socket of the test's own stands in for the daemon: it drops every connection at first, then
 * forwards to the real daemon, as a restarting dockerd does.
 */
test('a worker starting while the Docker daemon is unreachable waits for it instead of crashing', async () => {
  const socket = path.join(tmpdir(), `agentbench-docker-${randomBytes(4).toString('hex')}.sock`);
  let daemonUp = false;
  const proxy = net.createServer((c) => {
    if (!daemonUp) {
      c.destroy();
      return;
    }
    const upstream = net.connect('/var/run/docker.sock');
    c.pipe(upstream).pipe(c);
    upstream.on('error', () => c.destroy());
    c.on('error', () => upstream.destroy());
  });
  await new Promise<void>((resolve) => proxy.listen(socket, resolve));
  const db = await createTestDatabase();
  const { log, lines } = captureLogger('info');
  const config = loadConfig(
    localTestEnv({
      DATABASE_URL: db.url,
      DOCKER_SOCKET_PATH: socket,
      TEMPORAL_TASK_QUEUE: `docker-outage-${randomBytes(4).toString('hex')}`,
    }),
  );
  const client = await connectTemporalClient(config);
  try {
    const starting = createCaseWorker({
      config,
      log,
      pool: db.pool,
      docker: createDockerClient(socket),
      client,
    });
    // The worker has met the outage (and is waiting) before the daemon comes back.
    const deadline = Date.now() + 30_000;
    while (!lines.some((l) => l.code === 'INFRA_OUTAGE_WAIT') && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    assert.ok(
      lines.some((l) => l.code === 'INFRA_OUTAGE_WAIT'),
      'the worker logged that it waits for Docker',
    );
    daemonUp = true;

    const worker = await starting;

    // It runs (polls, sweeps) and stops cleanly.
    await worker.runUntil(new Promise((r) => setTimeout(r, 500)));
  } finally {
    await client.connection.close();
    await db.drop();
    proxy.close();
    await rm(socket, { force: true });
  }
});
