import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { Client, Connection } from '@temporalio/client';
import { createDockerClient } from '../../src/docker/docker-client';
import { DockerSandbox } from '../../src/docker/docker-sandbox';
import { LABELS } from '../../src/docker/labels';
import { OrphanReaper, type OwnershipVerdict } from '../../src/docker/orphan-reaper';
import { Semaphore } from '../../src/docker/semaphore';
import { caseContainerOwnership } from '../../src/temporal/case-container-ownership';
import { createTestDatabase, seedExperiment, setCaseStatuses, type TestDatabase } from '../support/database';
import { freePort } from '../support/ports';
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
/** This test's deployment; another test run's (or deployment's) containers on this daemon carry another. */
const deploymentId = `test-${runId}`;
const sandbox = new DockerSandbox(docker, new Semaphore(4), log, { deploymentId });

async function exists(nameOrId: string): Promise<boolean> {
  return (await sandbox.inspectState(nameOrId)) !== null;
}

function managedBy(owner: DockerSandbox, labels: Record<string, string> = {}) {
  return owner.createAndStart(baseSpec(runId, { labels: { [TEST_RUN_LABEL]: runId, ...labels } }));
}

/** A container with our labels except io.agentbench.managed, made outside the sandbox. */
function unmanaged(): string {
  const name = `agentbench-test-${runId}-unmanaged`;
  execFileSync(
    'docker',
    [
      'create',
      '--name',
      name,
      '--label',
      `${TEST_RUN_LABEL}=${runId}`,
      '--label',
      `${LABELS.deployment}=${deploymentId}`,
      BUSYBOX,
    ],
    { stdio: 'ignore' },
  );
  return name;
}

describe('OrphanReaper with the worker’s owner check (real Docker, Postgres, Temporal)', () => {
  let db: TestDatabase;
  let connection: Connection;
  let client: Client;
  let unreachable: Client;
  const taskQueue = `orphan-reaper-${runId}`;
  const workflowIds: string[] = [];

  /** A workflow nobody polls for stays RUNNING; `closed` terminates it at once. */
  async function workflow(name: string, closed = false): Promise<string> {
    const workflowId = `${runId}-${name}`;
    const handle = await client.workflow.start('experimentRunWorkflow', { workflowId, taskQueue, args: [] });
    workflowIds.push(workflowId);
    if (closed) await handle.terminate('test: the run is over');
    return workflowId;
  }

  before(async () => {
    await ensureBenchImages(docker);
    db = await createTestDatabase();
    connection = await Connection.connect({ address: process.env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233' });
    client = new Client({ connection });
    // Nothing listens there: every call fails (after the client's own retries) or hits the deadline.
    unreachable = new Client({ connection: Connection.lazy({ address: `127.0.0.1:${await freePort()}` }) });
  });

  after(async () => {
    await removeTestContainers(docker, runId);
    for (const id of workflowIds)
      await client.workflow
        .getHandle(id)
        .terminate('test cleanup')
        .catch(() => undefined);
    await unreachable.connection.close().catch(() => undefined);
    await connection.close();
    await db.drop();
  });

  test('Temporal unreachable keeps live containers; a second deployment and label-less ones are never judged; a real orphan is removed', async () => {
    const seed = await seedExperiment(db.pool, { cases: 3 });
    const [liveCase, orphanCase, finishedCase] = seed.runCaseIds;
    assert.ok(liveCase !== undefined && orphanCase !== undefined && finishedCase !== undefined);
    await setCaseStatuses(db.pool, [liveCase, orphanCase], 'running');
    await setCaseStatuses(db.pool, [finishedCase], 'success');
    const running = await workflow('running');
    const closed = await workflow('closed', true);
    const caseLabels = (runCaseId: number, workflowId: string) => ({
      [LABELS.experimentId]: String(seed.experimentId),
      [LABELS.runCaseId]: String(runCaseId),
      [LABELS.workflowId]: workflowId,
    });

    const live = await managedBy(sandbox, caseLabels(liveCase, running));
    const orphan = await managedBy(sandbox, caseLabels(orphanCase, closed));
    const finished = await managedBy(sandbox, caseLabels(finishedCase, running));
    // Another deployment on this daemon: by our database and Temporal these look like orphans.
    const otherDeployment = new DockerSandbox(docker, new Semaphore(2), log, {
      deploymentId: `${deploymentId}-b`,
    });
    const foreign = [
      await managedBy(otherDeployment, caseLabels(orphanCase, closed)),
      await managedBy(otherDeployment, caseLabels(999_999_999, `${runId}-not-ours`)),
    ];
    // A caller label cannot move a container into another deployment.
    const forged = await managedBy(otherDeployment, {
      [LABELS.deployment]: deploymentId,
      ...caseLabels(orphanCase, closed),
    });
    const labelless = await managedBy(
      new DockerSandbox(docker, new Semaphore(2), log),
      caseLabels(orphanCase, closed),
    );
    const stranger = unmanaged();

    const reaper = (judgeClient: Client) =>
      new OrphanReaper({
        sandbox,
        log,
        deploymentId,
        minAgeSeconds: 0,
        judge: caseContainerOwnership({ pool: db.pool, client: judgeClient, describeTimeoutMs: 3_000 }),
      });

    const blind = await reaper(unreachable).sweep();
    assert.deepEqual(
      blind.removed,
      [finished.name],
      'only the verdict Postgres alone can give (a terminal row) is acted on',
    );
    assert.equal(blind.unknown, 2, 'both containers whose workflow must be asked are unknown');
    assert.ok(await exists(live.containerId), 'a live container survives Temporal being down');
    assert.ok(await exists(orphan.containerId), 'unknown is kept, even for a would-be orphan');
    const unknownLogged = lines.filter((l) => l.code === 'SANDBOX_ORPHAN_CHECK_UNKNOWN');
    assert.deepEqual(unknownLogged.map((l) => l.container).sort(), [live.name, orphan.name].sort());
    assert.match(String(unknownLogged[0]?.reason), /^temporal: /);

    const swept = await reaper(client).sweep();
    assert.deepEqual(
      swept.removed,
      [orphan.name],
      'the orphan of our deployment (its workflow closed) is removed',
    );
    assert.equal(swept.unknown, 0);
    assert.ok(
      swept.foreign >= foreign.length + 1,
      'the other deployment’s and label-less containers are counted apart',
    );
    assert.equal(await exists(orphan.containerId), false);
    assert.ok(await exists(live.containerId), 'the live case keeps its container');
    for (const c of [...foreign, forged, labelless])
      assert.ok(await exists(c.containerId), `${c.name} of another (or no) deployment is untouched`);
    assert.ok(await exists(stranger), 'a container without io.agentbench.managed=true is never touched');
    const removedLog = lines.find((l) => l.code === 'SANDBOX_ORPHAN_REMOVED' && l.container === orphan.name);
    assert.equal(removedLog?.reason, 'workflow TERMINATED', 'removal is logged with its code and why');
  });

  test('containers younger than minAgeSeconds are not judged at all', async () => {
    const young = await managedBy(sandbox, { [LABELS.workflowId]: `${runId}-young` });
    let asked = 0;
    const reaper = new OrphanReaper({
      sandbox,
      log,
      deploymentId,
      minAgeSeconds: 3600,
      judge: () => {
        asked++;
        return Promise.resolve({ verdict: 'orphan', reason: 'test' });
      },
    });
    assert.deepEqual((await reaper.sweep()).removed, []);
    assert.equal(asked, 0);
    assert.ok(await exists(young.containerId));
  });

  test('a throwing or hanging owner check is unknown and does not stop the sweep', async () => {
    const throwing = await managedBy(sandbox, { [LABELS.workflowId]: `${runId}-throws` });
    const hanging = await managedBy(sandbox, { [LABELS.workflowId]: `${runId}-hangs` });
    const orphan = await managedBy(sandbox, { [LABELS.workflowId]: `${runId}-orphan-2` });
    const reaper = new OrphanReaper({
      sandbox,
      log,
      deploymentId,
      minAgeSeconds: 0,
      judgeTimeoutMs: 500,
      judge: async (labels): Promise<OwnershipVerdict> => {
        const id = labels[LABELS.workflowId];
        if (id === `${runId}-throws`) throw new Error('temporal unreachable');
        if (id === `${runId}-hangs`) return new Promise(() => undefined);
        if (id === `${runId}-orphan-2`) return { verdict: 'orphan', reason: 'test' };
        return { verdict: 'wanted' };
      },
    });
    const swept = await reaper.sweep();
    assert.deepEqual(swept.removed, [orphan.name]);
    assert.ok(swept.unknown >= 2);
    assert.ok(await exists(throwing.containerId));
    assert.ok(await exists(hanging.containerId));
  });

  test('start() sweeps periodically and stop() ends the schedule', async () => {
    const first = await managedBy(sandbox, { [LABELS.workflowId]: `${runId}-periodic-1` });
    const unwanted = new Set([`${runId}-periodic-1`]);
    const reaper = new OrphanReaper({
      sandbox,
      log,
      deploymentId,
      minAgeSeconds: 0,
      judge: (labels) =>
        Promise.resolve(
          unwanted.has(labels[LABELS.workflowId] ?? '')
            ? { verdict: 'orphan', reason: 'test' }
            : { verdict: 'wanted' },
        ),
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
    const second = await managedBy(sandbox, { [LABELS.workflowId]: `${runId}-periodic-2` });
    unwanted.add(`${runId}-periodic-2`);
    const sweepsBefore = lines.filter((l) => l.code === 'SANDBOX_ORPHAN_REMOVED').length;
    await new Promise((resolve) => setTimeout(resolve, 600)); // three would-be intervals: proves absence
    assert.equal(await exists(second.containerId), true);
    assert.equal(lines.filter((l) => l.code === 'SANDBOX_ORPHAN_REMOVED').length, sweepsBefore);
  });
});
