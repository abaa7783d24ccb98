import Dockerode from 'dockerode';

/** Engine API client over the unix socket; no client-wide timeout because pulls and execs stream for long. */
export function createDockerClient(socketPath: string): Dockerode {
  return new Dockerode({ socketPath });
}

/** True when the daemon answers `/_ping` within timeoutMs. Never throws. */
export async function pingDocker(docker: Dockerode, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  try {
    return await Promise.race([
      docker.ping().then(
        () => true,
        () => false,
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}
