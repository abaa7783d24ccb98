import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import type Dockerode from 'dockerode';
import pino from 'pino';
import type { Logger } from '../../src/logger';
import { DEFAULT_CASE_FILES_DIR, type CaseContainerSpec } from '../../src/docker/docker-sandbox';

export const BUSYBOX = 'bench/busybox:latest';
export const AGENT_BASE = 'bench/agent-base:bookworm';
export const SOCKET_PATH = '/var/run/docker.sock';
/** Every container a test creates carries this label with the run's unique id, so `after` finds them all. */
export const TEST_RUN_LABEL = 'io.agentbench.test-run';

const REPO = path.resolve(__dirname, '../..');

/** Builds the bench images from local files when one is missing (first run on a machine). */
export async function ensureBenchImages(docker: Dockerode): Promise<void> {
  for (const image of [BUSYBOX, AGENT_BASE]) {
    const present = await docker
      .getImage(image)
      .inspect()
      .then(
        () => true,
        () => false,
      );
    if (!present) {
      execFileSync(path.join(REPO, 'scripts/build-images'), { stdio: 'inherit' });
      return;
    }
  }
}

export function newTestRunId(): string {
  return `t-${randomUUID().slice(0, 12)}`;
}

/** A pino logger whose JSON lines land in `lines`, for asserting on CONTRACT §10 codes. */
export function captureLogger(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      cb();
    },
  });
  return { log: pino({ level: 'debug' }, sink), lines };
}

export async function removeTestContainers(docker: Dockerode, runId: string): Promise<void> {
  const containers = await docker.listContainers({
    all: true,
    filters: { label: [`${TEST_RUN_LABEL}=${runId}`] },
  });
  await Promise.all(
    containers.map((c) =>
      docker
        .getContainer(c.Id)
        .remove({ force: true, v: true })
        .catch(() => undefined),
    ),
  );
  // Containers removed behind the sandbox's back leave their case file directories (the reaper's
  // job in production): remove this run's.
  const dirs = await readdir(DEFAULT_CASE_FILES_DIR).catch(() => [] as string[]);
  await Promise.all(
    dirs
      .filter((d) => d.startsWith(`agentbench-test-${runId}-`))
      .map((d) => rm(path.join(DEFAULT_CASE_FILES_DIR, d), { recursive: true, force: true })),
  );
}

export function baseSpec(runId: string, overrides: Partial<CaseContainerSpec> = {}): CaseContainerSpec {
  return {
    name: `agentbench-test-${runId}-${randomUUID().slice(0, 8)}`,
    image: BUSYBOX,
    startCommand: 'sleep infinity',
    env: {},
    labels: { [TEST_RUN_LABEL]: runId },
    limits: { memoryMb: 64, cpus: 0.5, pidsLimit: 64 },
    hardening: { noNewPrivileges: true, dropAllCapabilities: true },
    startup: { timeoutSeconds: 10, pollIntervalSeconds: 0.1 },
    ...overrides,
  };
}

/** Polls `check` until it returns true or the deadline passes (no blind sleeps in tests). */
export async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** `docker inspect` through the CLI, as an operator would look at it. */
export function cliInspect(containerId: string): {
  HostConfig: Record<string, unknown>;
  Mounts: Array<{ Source?: string; Destination?: string }>;
  Config: { Labels: Record<string, string>; Env: string[]; User: string };
} {
  const out = execFileSync('docker', ['inspect', containerId], { encoding: 'utf8' });
  const parsed = JSON.parse(out) as unknown[];
  return parsed[0] as ReturnType<typeof cliInspect>;
}
