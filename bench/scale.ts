/**
 * bench/scale — the orchestrator alone at 10 000 cases (issue: Orchestration on Temporal).
 *
 *   node --import tsx bench/scale.ts [--cases 10000] [--concurrency 64]
 *
 * The container phase is replaced by a no-op activity that stores a trivial result, so what is
 * measured is Temporal + our activities + Postgres. Reports cases/s, history events of every run
 * of the chain (continue-as-new), peak RSS of this process (which hosts the worker), time to first
 * finished case; and, as the baseline measured in the same run, the same per-case database work
 * done by a plain loop with the same concurrency and no Temporal.
 */
import { randomBytes } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { NativeConnection, Worker } from '@temporalio/worker';
import type { Activities } from '../activities';
import { createInlineFinisher, storeCaseResult } from '../activities/case-execution';
import { createCaseFinalization } from '../activities/case-finalization';
import { createCaseScoring } from '../activities/case-scoring';
import { createCaseTrajectory } from '../activities/case-trajectory';
import { createRunActivities } from '../activities/run-activities';
import { caseSpecDefaults, loadConfig } from '../src/config';
import { createLogger } from '../src/logger';
import { parseExperimentMessage } from '../src/domain/message';
import { anyScorerCallsJudge } from '../src/domain/judge-score';
import type { CaseExecutionSummary, ExecuteCaseInput } from '../src/domain/activity-contract';
import { errorStackText } from '../src/domain/errors';
import type { ExperimentRunResult } from '../src/domain/experiment-run';
import { saveCaseResult, type CaseRawResult } from '../src/db/case-result-repository';
import { RunRequestCache } from '../src/db/run-request-cache';
import { persistCaseResult, transitionCaseStatus } from '../src/db/run-case-repository';
import { connectTemporalClient } from '../src/temporal/connection';
import { startExperimentRun } from '../src/temporal/run-starter';
import { installTemporalLogging } from '../src/temporal/runtime-logging';
import { fetchWorkflowHistories } from '../src/temporal/history-replay';
import { createCaseTelemetry } from '../src/otel/case-telemetry';
import { createTestDatabase, seedExperiment } from '../test/support/database';
import { buildPlatformMessage } from '../test/support/platform';
import { localTestEnv } from '../test/support/stack';

const { values } = parseArgs({
  options: { cases: { type: 'string', default: '10000' }, concurrency: { type: 'string', default: '64' } },
});
const CASES = Number(values.cases);
const CONCURRENCY = Number(values.concurrency);

const mb = (bytes: number) => (bytes / 1024 / 1024).toFixed(0);

function trivialResult(): CaseRawResult {
  const now = new Date().toISOString();
  return {
    status: 'success',
    errorMessage: null,
    exitCode: 0,
    agentOutput: 'ok',
    logs: 'ok',
    stdoutTrajectory: null,
    agentUsage: null,
    timings: { sandboxConnectMs: 0, caseExecMs: 0, totalMs: 1 },
    startedAt: now,
    finishedAt: now,
    image: 'none',
    containerName: null,
    attempt: 1,
    // No container, so nothing can still be sending spans.
    telemetryComplete: true,
  };
}

/** Workers run with two malloc arenas (bin/benchctl, deploy/Dockerfile); measure the same way. */
function reexecWithWorkerMallocSettings(): boolean {
  if (process.env.MALLOC_ARENA_MAX) return false;
  const r = spawnSync(process.execPath, [...process.execArgv, __filename, ...process.argv.slice(2)], {
    stdio: 'inherit',
    env: { ...process.env, MALLOC_ARENA_MAX: '2' },
  });
  process.exit(r.status ?? 1);
}

async function main(): Promise<void> {
  if (reexecWithWorkerMallocSettings()) return;
  const log = createLogger({ level: 'silent' });
  installTemporalLogging(log, 'ERROR');
  const taskQueue = `agentbench-scale-${randomBytes(4).toString('hex')}`;
  const db = await createTestDatabase();
  const config = loadConfig(
    localTestEnv({
      DATABASE_URL: db.url,
      TEMPORAL_TASK_QUEUE: taskQueue,
      DATABASE_POOL_MAX: '20',
      RESULT_EVENTS_ENABLED: process.env.RESULT_EVENTS_ENABLED ?? 'true',
    }),
  );
  const client = await connectTemporalClient(config);
  let rssPeak = 0;
  let atPeak = process.memoryUsage();
  const sampler = setInterval(() => {
    const m = process.memoryUsage();
    if (m.rss > rssPeak) {
      rssPeak = m.rss;
      atPeak = m;
    }
  }, 100);
  try {
    // --- the orchestrator -----------------------------------------------------------------------
    const seeded = await seedExperiment(db.pool, { cases: CASES });
    // Every activity family but the container phase's, which is replaced below: no sandbox, no
    // collector, no gateway; the image check never pulls.
    const activityDeps = {
      log,
      pool: db.pool,
      // RESULT_EVENTS_ENABLED=false measures the run without the outbox writes.
      resultEvents: config.resultEvents.enabled,
      runRequests: new RunRequestCache(db.pool, caseSpecDefaults(config), config.secretsKey),
      images: { ensureImage: async () => ({ action: 'present' }), imageId: async () => null },
      pullAttempts: config.consumer.maxRetries,
      config: { resultCache: config.resultCache },
      telemetry: createCaseTelemetry({ pool: db.pool, log, flushGraceMs: 0 }),
      evaluator: config.evaluator,
    };
    const raw = buildPlatformMessage(seeded, {
      queue: 'bench',
      runtimeSpec: { agent_image: 'bench/busybox:latest', case_exec_command: 'true' },
    });
    const parsed = parseExperimentMessage(JSON.stringify(raw));
    if (!parsed.ok) throw new Error(parsed.error);
    const needsJudge = anyScorerCallsJudge(parsed.message.scorers, 'success');
    // Everything of the container phase but the container, including its fast path.
    const finishInline = createInlineFinisher(activityDeps);
    const noopExecute = async (ref: ExecuteCaseInput): Promise<CaseExecutionSummary> => {
      await transitionCaseStatus(db.pool, {
        experimentId: ref.experimentId,
        runCaseId: ref.runCaseId,
        to: 'running',
      });
      const summary: CaseExecutionSummary = {
        status: 'success',
        errorMessage: null,
        exitCode: 0,
        needsJudge,
      };
      return finishInline(
        ref,
        await storeCaseResult(activityDeps, ref, trivialResult(), summary, log),
        summary,
        log,
      );
    };
    const activities: Activities = {
      ...createRunActivities(activityDeps),
      executeCase: noopExecute,
      ...createCaseTrajectory(activityDeps),
      ...createCaseScoring(activityDeps),
      ...createCaseFinalization(activityDeps),
    };
    const connection = await NativeConnection.connect({ address: config.temporal.address });
    // As in production (deploy/Dockerfile): the workflow code is bundled ahead of time, in another
    // process, so the worker's memory is what serving the run costs, not webpack's.
    const bundle = path.join(tmpdir(), `agentbench-scale-bundle-${process.pid}.js`);
    execFileSync(
      process.execPath,
      ['--import', 'tsx', path.resolve(__dirname, '../scripts/bundle-workflows.ts'), bundle],
      { stdio: 'ignore' },
    );
    rssPeak = 0;
    const worker = await Worker.create({
      connection,
      taskQueue,
      workflowBundle: { codePath: bundle },
      activities,
      maxConcurrentActivityTaskExecutions: CONCURRENCY * 2,
    });
    const rssBeforeRun = process.memoryUsage().rss;
    const started = Date.now();
    let firstCaseMs: number | null = null;
    const firstWatch = setInterval(() => {
      void db.pool
        .query(`SELECT 1 FROM run_cases WHERE experiment_id = $1 AND status = 'success' LIMIT 1`, [
          seeded.experimentId,
        ])
        .then((r) => {
          if (r.rows.length > 0 && firstCaseMs === null) firstCaseMs = Date.now() - started;
        });
    }, 50);
    const result = await worker.runUntil(async () => {
      const { workflowId } = await startExperimentRun(
        { client, pool: db.pool, config, log },
        parsed.message,
        parsed.message.message_id,
        {
          concurrentCases: CONCURRENCY,
        },
      );
      const r = (await client.workflow.getHandle(workflowId).result()) as ExperimentRunResult;
      return { r, workflowId };
    });
    clearInterval(firstWatch);
    // What follows (fetching every history for the report) is the bench's work, not the worker's.
    clearInterval(sampler);
    const seconds = (Date.now() - started) / 1000;
    const histories = await fetchWorkflowHistories(client, result.workflowId);
    const lengths = histories.map((h) => (h.history as { events?: unknown[] }).events?.length ?? 0);
    await connection.close();

    // --- baseline (after the orchestrator, so its memory does not count against the worker): the same per-case database work, no Temporal -------------------------------
    const base = await seedExperiment(db.pool, { cases: CASES });
    const baseStart = Date.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < base.runCaseIds.length) {
          const runCaseId = base.runCaseIds[next++] as number;
          await transitionCaseStatus(db.pool, { experimentId: base.experimentId, runCaseId, to: 'running' });
          await saveCaseResult(db.pool, 'baseline', runCaseId, trivialResult());
          await transitionCaseStatus(db.pool, {
            experimentId: base.experimentId,
            runCaseId,
            to: 'trajectory',
          });
          await persistCaseResult(
            db.pool,
            {
              runCaseId,
              experimentId: base.experimentId,
              status: 'success',
              agentTrajectory: [],
              agentOutput: 'ok',
              latencyMs: 1,
              logs: 'ok',
              errorMessage: null,
              runtimeSnapshot: {},
              inspectEvalId: null,
              inspectSampleId: null,
              usage: {},
              scores: null,
            },
            { resultEvents: config.resultEvents.enabled },
          );
        }
      }),
    );
    const baseSeconds = (Date.now() - baseStart) / 1000;

    const rate = CASES / seconds;
    const baseRate = CASES / baseSeconds;
    const lines = [
      `bench/scale: ${CASES} cases, concurrency ${CONCURRENCY}, outcome ${result.r.outcome}, ${result.r.progress.success} success`,
      `orchestrator: ${seconds.toFixed(1)} s, ${rate.toFixed(1)} cases/s (target >= 50)`,
      `baseline (same DB work, no Temporal): ${baseSeconds.toFixed(1)} s, ${baseRate.toFixed(1)} cases/s`,
      `ratio orchestrator/baseline throughput: ${(rate / baseRate).toFixed(2)}`,
      `runs in the continue-as-new chain: ${lengths.length}; history events per run: max ${Math.max(...lengths)} (target <= 10240), all ${lengths.join(', ')}`,
      `peak RSS of the worker process while serving the run: ${(rssPeak / 1024 / 1024).toFixed(0)} MB (target < 400); at the peak: JS heap ${mb(atPeak.heapUsed)} of ${mb(atPeak.heapTotal)} MB, external ${mb(atPeak.external)} MB; RSS with the worker created, before the run: ${mb(rssBeforeRun)} MB`,
      `time to first finished case: ${firstCaseMs ?? 'n/a'} ms`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    clearInterval(sampler);
    await client.connection.close();
    await db.drop();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${errorStackText(err)}\n`);
    process.exit(1);
  },
);
