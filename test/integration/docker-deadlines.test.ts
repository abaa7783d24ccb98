import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createDockerClient } from '../../src/docker/docker-client';
import { DockerSandbox } from '../../src/docker/docker-sandbox';
import { DockerTimeoutError } from '../../src/docker/errors';
import { ImagePuller } from '../../src/docker/image-puller';
import { Semaphore } from '../../src/docker/semaphore';
import { baseSpec, BUSYBOX, captureLogger, newTestRunId } from './docker-fixtures';

const runId = newTestRunId();

function timeout(code: string) {
  return (err: unknown) => {
    assert.ok(err instanceof DockerTimeoutError, String(err));
    assert.equal(err.code, code);
    assert.match(err.message, new RegExp(`^${code}: .+ did not answer within \\d+ ms$`));
    return true;
  };
}

/**
 * A Docker socket that accepts every connection and never answers: a daemon hung on a lock or
 * swamped, which no restart-based fault reproduces reliably. Only the client's deadlines end a call.
 */
describe('Docker calls have deadlines (a daemon that never answers)', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'agentbench-hung-docker-'));
  const socketPath = path.join(dir, 'docker.sock');
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => sockets.add(socket));
  const docker = createDockerClient(socketPath);
  const { log } = captureLogger();
  const ops = new Semaphore(4);
  const images = new ImagePuller(docker, ops, log);
  const sandbox = new DockerSandbox(docker, ops, log, { images });

  before(() => new Promise<void>((resolve) => server.listen(socketPath, resolve)));
  after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((resolve) => server.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });

  test('create gets run_timeout_seconds and gives E_DOCKER_RUN_TIMEOUT; the ops slot is released', async () => {
    const spec = baseSpec(runId, {
      startup: { timeoutSeconds: 5, pollIntervalSeconds: 0.1, runTimeoutSeconds: 1 },
    });
    await assert.rejects(sandbox.createAndStart(spec), timeout('E_DOCKER_RUN_TIMEOUT'));
    assert.equal(ops.inUse, 0);
  });

  test('an image inspect gets inspect_timeout_seconds, a container inspect the §2.3 default (10 s)', async () => {
    await assert.rejects(
      images.ensureImage(BUSYBOX, 'if-not-present', 5, 1),
      timeout('E_DOCKER_IMAGE_INSPECT_TIMEOUT'),
    );
    await assert.rejects(sandbox.inspectState('agentbench-nothing'), timeout('E_DOCKER_INSPECT_TIMEOUT'));
  });
});
