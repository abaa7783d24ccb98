import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createDockerClient } from '../../src/docker/docker-client';
import { DockerSandbox } from '../../src/docker/docker-sandbox';
import { LABELS } from '../../src/docker/labels';
import { OrphanReaper } from '../../src/docker/orphan-reaper';
import { Semaphore } from '../../src/docker/semaphore';
import {
  baseSpec,
  BUSYBOX,
  captureLogger,
  ensureBenchImages,
  newTestRunId,
  removeTestContainers,
  SOCKET_PATH,
  TEST_RUN_LABEL,
  waitFor,
} from './docker-fixtures';

const docker = createDockerClient(SOCKET_PATH);
const runId = newTestRunId();
const { log, lines } = captureLogger();
const sandbox = new DockerSandbox(docker, new Semaphore(4), log);

/**
 * Other test runs may have managed containers on this daemon right now: this run only ever declares
 * its own containers unwanted.
 */
function wantedUnlessOurs(unwanted: Set<string>) {
  return async (labels: Record<string, string>) =>
    labels[TEST_RUN_LABEL] !== runId || !unwanted.has(labels[LABELS.workflowId] ?? '');
}

async function exists(nameOrId: string): Promise<boolean> {
  return (await sandbox.inspectState(nameOrId)) !== null;
}

async function managed(workflowId: string) {
  return sandbox.createAndStart(
    baseSpec(runId, { labels: { [TEST_RUN_LABEL]: runId, [LABELS.workflowId]: `${runId}-${workflowId}` } }),
  );
}

/** A container with our labels except io.agentbench.managed, made outside the sandbox. */
function unmanaged(workflowId: string): string {
  const name = `agentbench-test-${runId}-unmanaged-${workflowId}`;
  execFileSync(
    'docker',
    [
      'create',
      '--name',
      name,
      '--label',
      `${TEST_RUN_LABEL}=${runId}`,
      '--label',
      `${LABELS.workflowId}=${runId}-${workflowId}`,
      BUSYBOX,
    ],
    { stdio: 'ignore' },
  );
  return name;
}

describe('OrphanReaper (real Docker)', () => {
  before(async () => {
    await ensureBenchImages(docker);
  });

  after(async () => {
    await removeTestContainers(docker, runId);
  });

  test('removes old unwanted managed containers, keeps wanted and young ones, never touches unlabelled ones', async () => {
    const orphan = await managed('orphan');
    const wanted = await managed('wanted');
    const stranger = unmanaged('orphan');
    const unwanted = new Set([`${runId}-orphan`]);

    const tooYoung = new OrphanReaper({
      sandbox,
      log,
      minAgeSeconds: 3600,
      isStillWanted: wantedUnlessOurs(unwanted),
    });
    assert.deepEqual((await tooYoung.sweep()).removed, [], 'containers younger than minAgeSeconds are kept');
    assert.ok(await exists(orphan.containerId));

    const reaper = new OrphanReaper({
      sandbox,
      log,
      minAgeSeconds: 0,
      isStillWanted: wantedUnlessOurs(unwanted),
    });
    const swept = await reaper.sweep();
    assert.deepEqual(swept.removed, [orphan.name]);
    assert.ok(swept.kept >= 1);
    assert.equal(await exists(orphan.containerId), false);
    assert.equal(await exists(wanted.containerId), true);
    assert.equal(
      await exists(stranger),
      true,
      'a container without io.agentbench.managed=true is never touched',
    );

    const logged = lines.find((l) => l.code === 'SANDBOX_ORPHAN_REMOVED' && l.container === orphan.name);
    assert.ok(logged, 'removal is logged with its code');
  });

  test('a failing isStillWanted keeps the container and does not stop the sweep', async () => {
    const flaky = await managed('flaky');
    const orphan = await managed('orphan-2');
    const reaper = new OrphanReaper({
      sandbox,
      log,
      minAgeSeconds: 0,
      isStillWanted: async (labels) => {
        if (labels[TEST_RUN_LABEL] !== runId) return true;
        if (labels[LABELS.workflowId] === `${runId}-flaky`) throw new Error('temporal unreachable');
        return labels[LABELS.workflowId] !== `${runId}-orphan-2`;
      },
    });
    const swept = await reaper.sweep();
    assert.deepEqual(swept.removed, [orphan.name]);
    assert.equal(await exists(flaky.containerId), true);
  });

  test('start() sweeps periodically and stop() ends the schedule', async () => {
    const first = await managed('periodic-1');
    const unwanted = new Set([`${runId}-periodic-1`]);
    const reaper = new OrphanReaper({
      sandbox,
      log,
      minAgeSeconds: 0,
      isStillWanted: wantedUnlessOurs(unwanted),
    });
    reaper.start(0.2);
    try {
      await waitFor(
        async () => !(await exists(first.containerId)),
        10_000,
        'periodic sweep to remove the orphan',
      );
    } finally {
      await reaper.stop();
    }

    // After stop() nothing is swept any more, even once the container becomes unwanted.
    const second = await managed('periodic-2');
    unwanted.add(`${runId}-periodic-2`);
    const sweepsBefore = lines.filter((l) => l.code === 'SANDBOX_ORPHAN_REMOVED').length;
    await new Promise((resolve) => setTimeout(resolve, 600)); // three would-be intervals: proves absence
    assert.equal(await exists(second.containerId), true);
    assert.equal(lines.filter((l) => l.code === 'SANDBOX_ORPHAN_REMOVED').length, sweepsBefore);
  });
});
