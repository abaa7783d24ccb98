import type Dockerode from 'dockerode';
import type { PullPolicy } from '../domain/runtime-spec';
import type { Logger } from '../logger';
import { DEFAULT_INSPECT_TIMEOUT_SECONDS } from '../domain/runtime-spec';
import { DockerInfraError, errorDetail, statusCode, withDockerDeadline } from './errors';
import type { Semaphore } from './semaphore';

type EnsureImageAction = 'present' | 'pulled' | 'used-local' | 'skipped';

/**
 * CONTRACT §6.2 step 1: makes the case image available per the runtime spec's pull policy.
 * Concurrent requests for one image share a single in-flight pull, so a 500-case experiment
 * starting at once asks the registry once, not 500 times. One per worker process (= per Docker
 * host): the run's preparation and the sandbox's create path (a case on a worker that did not
 * prepare its run) share it.
 */
export class ImagePuller {
  private readonly inFlight = new Map<string, Promise<void>>();

  constructor(
    private readonly docker: Dockerode,
    private readonly ops: Semaphore,
    private readonly log: Logger,
  ) {}

  async ensureImage(
    image: string,
    policy: PullPolicy,
    pullTimeoutSeconds: number,
    inspectTimeoutSeconds: number = DEFAULT_INSPECT_TIMEOUT_SECONDS,
  ): Promise<{ action: EnsureImageAction }> {
    const inspectMs = inspectTimeoutSeconds * 1000;
    if (policy === 'never') {
      if (!(await this.isPresent(image, inspectMs))) {
        throw new DockerInfraError('E_DOCKER_PULL', `image ${image} not present and pull_policy=never`);
      }
      return { action: 'skipped' };
    }
    if (policy === 'if-not-present' && (await this.isPresent(image, inspectMs))) return { action: 'present' };

    try {
      await this.pullShared(image, pullTimeoutSeconds);
      return { action: 'pulled' };
    } catch (err) {
      const detail = errorDetail(err);
      // Re-checked after the failure: another worker or a concurrent build may have provided it meanwhile.
      if (await this.isPresent(image, inspectMs)) {
        this.log.warn(
          { code: 'E_DOCKER_PULL_FAILED_USE_LOCAL', image, err: detail },
          'pull failed, using local image',
        );
        return { action: 'used-local' };
      }
      throw new DockerInfraError('E_DOCKER_PULL', detail, { cause: err });
    }
  }

  /** The local image's id (`sha256:…`), or null when it is not here: what a result cache key names. */
  async imageId(image: string): Promise<string | null> {
    try {
      const info = await this.inspectImage(image, DEFAULT_INSPECT_TIMEOUT_SECONDS * 1000);
      return info.Id;
    } catch (err) {
      if (err instanceof DockerInfraError) throw err;
      if (statusCode(err) === 404) return null;
      throw new DockerInfraError('E_DOCKER_PULL', `cannot inspect image ${image}: ${errorDetail(err)}`, {
        cause: err,
      });
    }
  }

  private async isPresent(image: string, inspectMs: number): Promise<boolean> {
    try {
      await this.inspectImage(image, inspectMs);
      return true;
    } catch (err) {
      if (err instanceof DockerInfraError) throw err;
      if (statusCode(err) === 404) return false;
      throw new DockerInfraError('E_DOCKER_PULL', `cannot inspect image ${image}: ${errorDetail(err)}`, {
        cause: err,
      });
    }
  }

  private inspectImage(image: string, timeoutMs: number): Promise<Dockerode.ImageInspectInfo> {
    return withDockerDeadline(
      () => this.docker.getImage(image).inspect(),
      timeoutMs,
      'E_DOCKER_IMAGE_INSPECT_TIMEOUT',
      `docker image inspect ${image}`,
    );
  }

  private pullShared(image: string, timeoutSeconds: number): Promise<void> {
    const existing = this.inFlight.get(image);
    if (existing) return existing;
    const pull = this.ops
      .run(() => this.pull(image, timeoutSeconds))
      .finally(() => this.inFlight.delete(image));
    this.inFlight.set(image, pull);
    return pull;
  }

  /** Follows the progress stream to its end; an `error` line in it is a failure even though HTTP said 200. */
  private async pull(image: string, timeoutSeconds: number): Promise<void> {
    const startedAt = Date.now();
    this.log.info({ code: 'DOCKER_PULL_START', image }, 'pulling image');
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutSeconds * 1000);
    try {
      await new Promise<void>((resolve, reject) => {
        controller.signal.addEventListener('abort', () =>
          reject(new Error(`pulling ${image} timed out after ${timeoutSeconds}s`)),
        );
        this.docker.pull(image, { abortSignal: controller.signal }).then((stream) => {
          controller.signal.addEventListener('abort', () => destroy(stream));
          let streamError: string | undefined;
          this.docker.modem.followProgress(
            stream,
            (err) => {
              if (err) reject(err);
              else if (streamError !== undefined) reject(new Error(streamError));
              else resolve();
            },
            (event: { error?: unknown; errorDetail?: { message?: unknown } }) => {
              if (event.error === undefined && event.errorDetail === undefined) return;
              streamError ??= String(event.errorDetail?.message ?? event.error);
            },
          );
        }, reject);
      });
    } finally {
      clearTimeout(timer);
    }
    this.log.info({ image, elapsed_ms: Date.now() - startedAt }, 'image pulled');
  }
}

function destroy(stream: NodeJS.ReadableStream): void {
  // The pull response is an http.IncomingMessage at runtime; the typings only promise ReadableStream.
  (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
}
