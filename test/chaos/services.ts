import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import { WORKFLOWS_PATH } from '../../src/temporal/workflows-path';
import { startHitCounter, type HitCounter } from '../support/hit-counter';
import { startPrivateDockerd, type PrivateDockerd } from '../support/private-dockerd';
import { startPrivatePostgres, type PrivatePostgres } from '../support/private-postgres';
import { startPrivateRabbitMq, type PrivateRabbitMq } from '../support/private-rabbitmq';
import { startPrivateRedis, type PrivateRedis } from '../support/private-redis';
import { startPrivateTemporal, type PrivateTemporal } from '../support/private-temporal';

/** The agent image every scenario runs (imported into the private dockerd from the shared one). */
export const CHAOS_IMAGE = 'bench/busybox:latest';

/**
 * Private instances of every service scripts/setup installs, on free ports, which the scenarios
 * stop and start for real; the shared instances other engineers use are never touched. One set
 * serves every scenario of a suite run (each scenario has its own database, task queue and queue).
 */
export interface ChaosServices {
  postgres: PrivatePostgres;
  redis: PrivateRedis;
  rabbitmq: PrivateRabbitMq;
  temporal: PrivateTemporal;
  dockerd: PrivateDockerd;
  counter: HitCounter;
  /** Bundled once for every worker the scenarios start (webpack at each restart would cost ~10 s). */
  workflowBundlePath: string;
  /**
   * SANDBOX_CASE_FILES_DIR of every worker: the reaper sweeps that directory against the containers
   * of its own daemon, so a worker on the private dockerd must never see the host's shared one
   * (it would remove the case files of live cases on the shared daemon).
   */
  caseFilesDir: string;
  destroy(): Promise<void>;
}

export async function startChaosServices(): Promise<ChaosServices> {
  const started: Array<{ destroy(): Promise<void> } | { close(): Promise<void> }> = [];
  const track = <T extends { destroy(): Promise<void> } | { close(): Promise<void> }>(p: Promise<T>) =>
    p.then((s) => {
      started.push(s);
      return s;
    });
  const destroyAll = async () => {
    await Promise.all(
      started.map((s) =>
        ('destroy' in s ? s.destroy() : s.close()).catch((err: unknown) => console.error(err)),
      ),
    );
  };
  const bundleDir = await mkdtemp(path.join(tmpdir(), 'agentbench-chaos-'));
  started.push({ destroy: () => rm(bundleDir, { recursive: true, force: true }) });
  const workflowBundlePath = path.join(bundleDir, 'workflow-bundle.js');
  const caseFilesDir = path.join(bundleDir, 'case-files');
  await mkdir(caseFilesDir);
  try {
    const bundled = bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: quietBundlerLogger }).then(
      ({ code }) => writeFile(workflowBundlePath, code),
    );
    const [postgres, redis, rabbitmq, temporal, dockerd, counter] = await Promise.all([
      track(startPrivatePostgres()),
      track(startPrivateRedis()),
      track(startPrivateRabbitMq()),
      track(startPrivateTemporal()),
      track(startPrivateDockerd({ images: [CHAOS_IMAGE] })),
      track(startHitCounter()),
    ]);
    await bundled;
    return {
      postgres,
      redis,
      rabbitmq,
      temporal,
      dockerd,
      counter,
      workflowBundlePath,
      caseFilesDir,
      destroy: destroyAll,
    };
  } catch (err) {
    await destroyAll();
    throw err;
  }
}

const quiet = () => undefined;
const quietBundlerLogger = { trace: quiet, debug: quiet, info: quiet, warn: quiet, error: quiet, log: quiet };
