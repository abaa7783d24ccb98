import type { WarmSandboxTemplate } from '../../src/docker/warm-pool';
import { BUSYBOX } from './docker-fixtures';

/** A busybox template like bench/sandbox-overhead's cases: `sleep infinity`, small limits. */
export function warmTemplate(overrides: Partial<WarmSandboxTemplate> = {}): WarmSandboxTemplate {
  return {
    container: {
      image: BUSYBOX,
      startCommand: 'sleep infinity',
      limits: { memoryMb: 64, cpus: 0.5, pidsLimit: 64 },
      hardening: { noNewPrivileges: true, dropAllCapabilities: true },
      startup: { timeoutSeconds: 20, pollIntervalSeconds: 0.1 },
    },
    network: undefined,
    ownNetwork: undefined,
    ...overrides,
  };
}
