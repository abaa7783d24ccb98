import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { gzipSync } from 'node:zlib';
import type Dockerode from 'dockerode';
import { createDockerClient } from '../../src/docker/docker-client';
import { DockerInfraError } from '../../src/docker/errors';
import { ImagePuller } from '../../src/docker/image-puller';
import { Semaphore } from '../../src/docker/semaphore';
import { tarArchive } from '../../src/docker/tar-archive';
import { DockerSandbox } from '../../src/docker/docker-sandbox';
import {
  baseSpec,
  BUSYBOX,
  captureLogger,
  ensureBenchImages,
  newTestRunId,
  removeTestContainers,
  SOCKET_PATH,
} from './docker-fixtures';

const runId = newTestRunId();
// No registry is reachable from this machine: pulls of these names fail within milliseconds.
const MISSING = `bench/does-not-exist-${runId}:nope`;

/** A dockerode client whose pull() calls are counted. */
function countingDocker(): { docker: Dockerode; pulls: string[] } {
  const docker = createDockerClient(SOCKET_PATH);
  const pulls: string[] = [];
  const original = docker.pull.bind(docker);
  docker.pull = ((repoTag: string, options?: object) => {
    pulls.push(repoTag);
    return original(repoTag, options);
  }) as Dockerode['pull'];
  return { docker, pulls };
}

function puller() {
  const { docker, pulls } = countingDocker();
  const { log, lines } = captureLogger();
  return { images: new ImagePuller(docker, new Semaphore(4), log), pulls, lines };
}

const sha256 = (data: Buffer | string) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

interface FakeImage {
  manifest: Buffer;
  blobs: Map<string, Buffer>;
  layerDigest: string;
}

/** A single-layer image whose layer content is unique to its repository (layers are shared by digest). */
function fakeImage(repository: string): FakeImage {
  const layerTar = tarArchive([{ path: '/hello.txt', content: `hello from ${repository}\n` }]);
  const layer = gzipSync(layerTar);
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: ['/hello.txt'] },
      rootfs: { type: 'layers', diff_ids: [sha256(layerTar)] },
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
      config: {
        mediaType: 'application/vnd.docker.container.image.v1+json',
        size: config.length,
        digest: sha256(config),
      },
      layers: [
        {
          mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
          size: layer.length,
          digest: sha256(layer),
        },
      ],
    }),
  );
  return {
    manifest,
    layerDigest: sha256(layer),
    blobs: new Map([
      [sha256(config), config],
      [sha256(layer), layer],
    ]),
  };
}

/**
 * A tiny registry (plain HTTP; Docker treats 127.0.0.0/8 as insecure) serving a fake image per
 * repository. A repository whose name contains "corrupt" serves a damaged layer, which Docker
 * reports as an `error` line inside an HTTP 200 progress stream.
 */
function startFakeRegistry(): Promise<{ server: http.Server; host: string }> {
  const images = new Map<string, FakeImage>();
  const imageFor = (repository: string) => {
    const existing = images.get(repository);
    if (existing) return existing;
    const created = fakeImage(repository);
    images.set(repository, created);
    return created;
  };
  const server = http.createServer((req, res) => {
    const url = req.url ?? '';
    const send = (status: number, body: Buffer, headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'Content-Length': String(body.length), ...headers });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (url === '/v2/') return send(200, Buffer.from('{}'), { 'Content-Type': 'application/json' });
    const route = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(url);
    if (!route?.[1] || !route[3]) return send(404, Buffer.from('{"errors":[{"code":"NOT_FOUND"}]}'));
    const [, repository, kind, reference] = route;
    const image = imageFor(repository);
    if (kind === 'manifests') {
      return send(200, image.manifest, {
        'Content-Type': 'application/vnd.docker.distribution.manifest.v2+json',
        'Docker-Content-Digest': sha256(image.manifest),
      });
    }
    const blob = image.blobs.get(reference);
    if (!blob) return send(404, Buffer.from('{"errors":[{"code":"BLOB_UNKNOWN"}]}'));
    const corrupt = repository.includes('corrupt') && reference === image.layerDigest;
    return send(200, corrupt ? Buffer.from(blob).fill(0x41, 40) : blob, {
      'Content-Type': 'application/octet-stream',
    });
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      resolve({ server, host: `127.0.0.1:${port}` });
    }),
  );
}

const pullError = (pattern: RegExp) => (err: unknown) =>
  err instanceof DockerInfraError && err.code === 'E_DOCKER_PULL' && pattern.test(err.message);

describe('ImagePuller (real Docker, no reachable registry)', () => {
  /** Accepts connections and never answers: a registry that hangs. */
  const hangingRegistry = net.createServer((socket) => sockets.add(socket));
  const sockets = new Set<net.Socket>();
  let hangingImage = '';
  let registry: { server: http.Server; host: string } | undefined;
  const pulledImages: string[] = [];

  before(async () => {
    await ensureBenchImages(createDockerClient(SOCKET_PATH));
    await new Promise<void>((resolve) => hangingRegistry.listen(0, '127.0.0.1', resolve));
    const { port } = hangingRegistry.address() as net.AddressInfo;
    hangingImage = `127.0.0.1:${port}/agentbench/hang-${runId}:latest`;
    registry = await startFakeRegistry();
  });

  after(async () => {
    const docker = createDockerClient(SOCKET_PATH);
    await removeTestContainers(docker, runId);
    for (const image of pulledImages)
      await docker
        .getImage(image)
        .remove({ force: true })
        .catch(() => undefined);
    registry?.server.closeAllConnections();
    await new Promise((resolve) => registry?.server.close(resolve));
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => hangingRegistry.close(resolve));
  });

  test('never: a local image is used as is, a missing one is an error; nothing is pulled', async () => {
    const { images, pulls } = puller();
    assert.deepEqual(await images.ensureImage(BUSYBOX, 'never', 5), { action: 'skipped' });
    await assert.rejects(
      images.ensureImage(MISSING, 'never', 5),
      pullError(new RegExp(`^E_DOCKER_PULL: image ${MISSING} not present and pull_policy=never$`)),
    );
    assert.deepEqual(pulls, []);
  });

  test('if-not-present: a local image is not pulled; a missing one is pulled and fails with E_DOCKER_PULL', async () => {
    const { images, pulls } = puller();
    assert.deepEqual(await images.ensureImage(BUSYBOX, 'if-not-present', 5), { action: 'present' });
    assert.deepEqual(pulls, []);
    await assert.rejects(images.ensureImage(MISSING, 'if-not-present', 10), pullError(/^E_DOCKER_PULL: .+/));
    assert.deepEqual(pulls, [MISSING]);
  });

  test('always: a failed pull of a local image falls back to it and logs E_DOCKER_PULL_FAILED_USE_LOCAL', async () => {
    const { images, pulls, lines } = puller();
    assert.deepEqual(await images.ensureImage(BUSYBOX, 'always', 10), { action: 'used-local' });
    assert.deepEqual(pulls, [BUSYBOX]);
    const fallback = lines.find((l) => l.code === 'E_DOCKER_PULL_FAILED_USE_LOCAL');
    assert.ok(fallback, 'fallback is logged with its code');
    assert.equal(fallback.image, BUSYBOX);
    assert.equal(fallback.level, 40);
  });

  test('always: a failed pull of a missing image throws E_DOCKER_PULL with the daemon message', async () => {
    const { images } = puller();
    await assert.rejects(images.ensureImage(MISSING, 'always', 10), (err: unknown) => {
      assert.ok(err instanceof DockerInfraError);
      assert.equal(err.code, 'E_DOCKER_PULL');
      assert.ok(err.message.length > 'E_DOCKER_PULL: '.length);
      return true;
    });
  });

  test('pulls from a registry: if-not-present pulls once, then finds the image present', async () => {
    const { images, pulls } = puller();
    const image = `${registry?.host}/agentbench/ok-${runId}:v1`;
    pulledImages.push(image);
    assert.deepEqual(await images.ensureImage(image, 'if-not-present', 30), { action: 'pulled' });
    assert.deepEqual(await images.ensureImage(image, 'if-not-present', 30), { action: 'present' });
    assert.deepEqual(await images.ensureImage(image, 'always', 30), { action: 'pulled' });
    assert.deepEqual(pulls, [image, image]);
  });

  test('an error line inside the 200 progress stream fails the pull', async () => {
    const { images } = puller();
    const image = `${registry?.host}/agentbench/corrupt-${runId}:v1`;
    pulledImages.push(image);
    await assert.rejects(
      images.ensureImage(image, 'always', 30),
      pullError(/^E_DOCKER_PULL: .*(verif|digest)/i),
    );
    await assert.rejects(
      createDockerClient(SOCKET_PATH).getImage(image).inspect(),
      (err: { statusCode?: number }) => err.statusCode === 404,
      'nothing half-pulled is left behind as an image',
    );
  });

  test('the pull timeout is enforced against a registry that never answers', async () => {
    const { images } = puller();
    const startedAt = Date.now();
    await assert.rejects(images.ensureImage(hangingImage, 'always', 1), pullError(/timed out after 1s/));
    assert.ok(Date.now() - startedAt < 5000, `took ${Date.now() - startedAt}ms`);
  });

  test('concurrent ensureImage calls for one image share a single pull', async () => {
    const { images, pulls, lines } = puller();
    const results = await Promise.allSettled(
      Array.from({ length: 6 }, () => images.ensureImage(hangingImage, 'always', 2)),
    );
    assert.ok(results.every((r) => r.status === 'rejected'));
    assert.deepEqual(pulls, [hangingImage], 'one pull for six callers');
    assert.equal(lines.filter((l) => l.code === 'DOCKER_PULL_START').length, 1);

    // The in-flight entry is dropped when the pull settles: the next call pulls again.
    const local = await Promise.all(
      Array.from({ length: 4 }, () => images.ensureImage(BUSYBOX, 'always', 10)),
    );
    assert.deepEqual(
      local,
      Array.from({ length: 4 }, () => ({ action: 'used-local' })),
    );
    assert.deepEqual(pulls, [hangingImage, BUSYBOX]);
  });

  test('a case whose image this daemon lacks gets it on create; concurrent cases of it pull once', async () => {
    const { docker, pulls } = countingDocker();
    const { log } = captureLogger();
    const ops = new Semaphore(4);
    const sandbox = new DockerSandbox(docker, ops, log, { images: new ImagePuller(docker, ops, log) });
    // What a worker that did not prepare the run sees: the image was never pulled here.
    const image = `${registry?.host}/agentbench/elsewhere-${runId}:v1`;
    pulledImages.push(image);
    const results = await Promise.allSettled(
      Array.from({ length: 4 }, () =>
        sandbox.createAndStart(
          baseSpec(runId, {
            image,
            startCommand: undefined,
            pull: { policy: 'if-not-present', timeoutSeconds: 30 },
          }),
        ),
      ),
    );
    assert.deepEqual(pulls, [image], 'one pull for four concurrent cases');
    // The registry's image has nothing runnable: its start may fail, but every create found the image.
    for (const r of results) {
      if (r.status === 'rejected') assert.doesNotMatch(String(r.reason), /no such image|E_DOCKER_PULL/i);
    }
    await docker.getImage(image).inspect();

    // pull_policy=never: a missing image is E_DOCKER_PULL, nothing pulled.
    await assert.rejects(
      sandbox.createAndStart(
        baseSpec(runId, { image: MISSING, pull: { policy: 'never', timeoutSeconds: 5 } }),
      ),
      pullError(/not present and pull_policy=never$/),
    );
    assert.deepEqual(pulls, [image]);
  });
});
