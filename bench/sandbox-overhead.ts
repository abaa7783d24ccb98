/**
 * bench/sandbox-overhead — what our pipeline costs on top of Docker itself (issue: Case sandbox).
 *
 *   node --import tsx bench/sandbox-overhead.ts [--cases 40] [--concurrency 1,2,4,8] [--rounds 3]
 *     [--runtimes runc,crun]
 *
 * For each concurrency C: N trivial cases (busybox, `sleep infinity` + `echo '{"output":"ok"}'`)
 * through the real pipeline — message published to RabbitMQ → bridge → Temporal workflow →
 * activities → Postgres — and, in the same run, the bare floor: the same create → start → exec →
 * remove sequence straight through dockerode, C at a time, no orchestration. Prints cases/min and
 * per-case p50/p95 for both and the ratios. Per-case latency of the pipeline is its container
 * phase (create to remove, as recorded by the activity), the floor's is the same four calls.
 * Each level runs `rounds` pipeline runs and `rounds` floor runs in alternating order and reports
 * the medians: single runs of ~10 s drift by ±15% on a 2-core machine.
 * Targets (2 cores): p50 at C=1 within 1.15x the floor; throughput at C=4 at least 0.9x the floor.
 *
 * --warm (issue 18): the same worker with warm sandboxes (SANDBOX_WARM_POOL_SIZE = --pool-size),
 * each level in rounds of cold pipeline, warm pipeline and floor: p50/p95 from "case scheduled" to
 * "agent's first instruction runs" and cases/min of each, warm/cold and warm/floor. A warm round
 * starts with its pool full (a worker whose cases keep coming); a cold round with the pool off
 * (size 0: every case creates its own container, as without the setting).
 * Targets (2 cores): warm p50 scheduled → first instruction < 100 ms at C=1; warm throughput at
 * C=4 >= 1.2x the cold floor.
 */
import { runBench, startBenchIntake } from './support/bench-intake';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { defaultPayloadConverter } from '@temporalio/common';
import { tsToMs } from '@temporalio/common/lib/time';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type Dockerode from 'dockerode';
import { amqpUrl } from '../src/config';
import { createLogger } from '../src/logger';
import { startExperimentRun } from '../src/temporal/run-starter';
import { seedExperiment } from '../test/support/database';
import { buildPlatformMessage, publishAsPlatform } from '../test/support/platform';
import { eventually } from '../test/support/stack';
import { errorStackText } from '../src/domain/errors';
import { cpuSecondsByName, cpuSnapshot, type CpuSnapshot } from './support/process-cpu';
import { countDockerCalls, perCaseText } from './support/docker-call-counter';

const { values } = parseArgs({
  options: {
    cases: { type: 'string', default: '40' },
    concurrency: { type: 'string', default: '1,2,4,8' },
    rounds: { type: 'string', default: '3' },
    // Also compares OCI runtimes on the bare floor, e.g. `runc,crun` (each registered with dockerd).
    runtimes: { type: 'string', default: '' },
    warm: { type: 'boolean', default: false },
    'pool-size': { type: 'string', default: '8' },
  },
});
const WARM = values.warm;
const POOL_SIZE = Number(values['pool-size']);
const CASES = Number(values.cases);
const ROUNDS = Number(values.rounds);
const LEVELS = values.concurrency.split(',').map(Number);
const RUNTIMES = values.runtimes.split(',').filter((r) => r !== '');
const IMAGE = 'bench/busybox:latest';
/** Wall-clock time of the host's boot, from its uptime: what a container's /proc/uptime counts from. */
const bootMs = Date.now() - Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 1000;

// A full collection before every measured run, pipeline and floor alike: the worker's start-up
// (webpack bundling the workflows) leaves ~120 MB of garbage, and V8's memory reducer collects it
// in a few 100 ms of main-thread and helper-thread CPU at some point in the first runs — landing on
// whichever side happens to be running then.
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

function median(xs: number[]): number {
  return percentile(xs, 50);
}

function percentile(xs: number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** What the pipeline's own processes burned between two snapshots (this process = worker + bridge). */
function ourCpu(before: CpuSnapshot, after: CpuSnapshot, selfSeconds: number): string {
  const used = cpuSecondsByName(before, after);
  const delta = (name: string) => used.get(name) ?? 0;
  return `cpu s: worker+bridge ${selfSeconds.toFixed(1)}, temporal ${delta('temporal').toFixed(1)}, postgres ${delta('postgres').toFixed(1)}, dockerd ${delta('dockerd').toFixed(1)}, containerd ${delta('containerd').toFixed(1)}`;
}

/** The floor: the four Docker calls every case needs, nothing else. */
async function bareCase(docker: Dockerode, runtime?: string): Promise<number> {
  const start = Date.now();
  const container = await docker.createContainer({
    Image: IMAGE,
    Cmd: ['sh', '-lc', 'sleep infinity'],
    HostConfig: { ExtraHosts: ['host.docker.internal:host-gateway'], Runtime: runtime },
  });
  try {
    await container.start();
  } catch (err) {
    await container.remove({ force: true });
    throw err;
  }
  const exec = await container.exec({
    Cmd: ['sh', '-lc', `echo '{"output":"ok"}'`],
    AttachStdout: true,
    AttachStderr: true,
  });
  const stream = await exec.start({ hijack: true, stdin: false });
  await new Promise<void>((resolve, reject) => {
    stream.on('end', resolve).on('close', resolve).on('error', reject);
    stream.resume();
  });
  await exec.inspect();
  await container.remove({ force: true });
  return Date.now() - start;
}

async function floor(
  docker: Dockerode,
  c: number,
  runtime?: string,
): Promise<{ perCase: number[]; seconds: number }> {
  const perCase: number[] = [];
  let next = 0;
  const start = Date.now();
  await Promise.all(
    Array.from({ length: c }, async () => {
      while (next++ < CASES) perCase.push(await bareCase(docker, runtime));
    }),
  );
  return { perCase, seconds: (Date.now() - start) / 1000 };
}

/**
 * The bare floor under each runtime, rounds alternating between them, at every level: what the
 * OCI runtime alone changes. A runtime that cannot run a container here is reported, not measured.
 */
async function compareRuntimes(docker: Dockerode): Promise<string[]> {
  const usable: string[] = [];
  const lines: string[] = [];
  for (const runtime of RUNTIMES) {
    try {
      await bareCase(docker, runtime);
      usable.push(runtime);
    } catch (err) {
      lines.push(`runtime ${runtime}: unusable on this host: ${errorStackText(err).split('\n')[0]}`);
    }
  }
  const [base, ...others] = usable;
  if (base === undefined) return lines;
  for (const c of LEVELS) {
    const runs = new Map<string, Array<{ rate: number; perCase: number[] }>>(usable.map((r) => [r, []]));
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? usable : [...usable].reverse();
      for (const runtime of order) {
        collectGarbage();
        const bare = await floor(docker, c, runtime);
        runs.get(runtime)!.push({ rate: (CASES / bare.seconds) * 60, perCase: bare.perCase });
      }
    }
    const summary = (runtime: string) => {
      const r = runs.get(runtime)!;
      return {
        rate: median(r.map((x) => x.rate)),
        p50: percentile(
          r.flatMap((x) => x.perCase),
          50,
        ),
      };
    };
    const b = summary(base);
    const parts = [`C=${c} floor by runtime: ${base} ${b.rate.toFixed(0)} cases/min p50 ${b.p50} ms`];
    for (const other of others) {
      const o = summary(other);
      parts.push(
        `${other} ${o.rate.toFixed(0)} cases/min p50 ${o.p50} ms (${other}/${base}: p50 ${(o.p50 / b.p50).toFixed(2)}x, throughput ${(o.rate / b.rate).toFixed(2)}x)`,
      );
    }
    lines.push(parts.join(' | '));
    process.stdout.write(`${lines.at(-1)}\n`);
  }
  return lines;
}

async function main(): Promise<void> {
  const log = createLogger({ level: 'silent' });
  let concurrency = 1;
  /** experiment id → its run's workflow, to read when each case was scheduled from its history. */
  const workflowIds = new Map<number, string>();
  const intake = await startBenchIntake({
    log,
    liveContainers: 16,
    ...(WARM ? { env: { SANDBOX_WARM_POOL_SIZE: String(POOL_SIZE) } } : {}),
    startRun: (stack) => async (message, meta) => {
      const started = await startExperimentRun(
        { client: stack.client, pool: stack.db.pool, config: stack.config, log },
        message,
        meta.dedupSuffix,
        { concurrentCases: concurrency },
      );
      workflowIds.set(message.experiment.id, started.workflowId);
      return started;
    },
  });
  const { stack, queue } = intake;

  /**
   * Per case: from "case scheduled" (the workflow's ActivityTaskScheduled event for its
   * executeCase, stamped by the Temporal server) to "the agent's first instruction runs" (the exec
   * command's first instruction reads /proc/uptime, 10 ms resolution, turned into wall time with
   * the host's own uptime: containers share the kernel's clock).
   */
  async function scheduledToFirstInstruction(experimentId: number): Promise<number[]> {
    const workflowId = workflowIds.get(experimentId);
    if (workflowId === undefined) throw new Error(`no workflow recorded for experiment ${experimentId}`);
    const history = await stack.client.workflow.getHandle(workflowId).fetchHistory();
    const scheduledAt = new Map<number, number>();
    for (const event of history.events ?? []) {
      const attrs = event.activityTaskScheduledEventAttributes;
      if (attrs?.activityType?.name !== 'executeCase') continue;
      const input = defaultPayloadConverter.fromPayload<{ runCaseId: number }>(attrs.input!.payloads![0]!);
      scheduledAt.set(Number(input.runCaseId), tsToMs(event.eventTime));
    }
    const { rows } = await stack.db.pool.query<{ id: string; output: unknown }>(
      'SELECT id, agent_output AS output FROM run_cases WHERE experiment_id = $1',
      [experimentId],
    );
    return rows.flatMap((row) => {
      const scheduled = scheduledAt.get(Number(row.id));
      const uptime = Number(row.output);
      return scheduled === undefined || !Number.isFinite(uptime) ? [] : [bootMs + uptime * 1000 - scheduled];
    });
  }
  const rows: string[] = [];
  // The worker's sandbox talks to Docker through this client: every call of a case is counted here.
  const dockerCalls = countDockerCalls(stack.docker);

  /** One pipeline run of `cases` cases at concurrency c, timed by the pipeline's own timestamps. */
  async function pipelineRun(c: number, cases = CASES) {
    concurrency = c;
    collectGarbage();
    const seeded = await seedExperiment(stack.db.pool, { cases });
    const message = buildPlatformMessage(seeded, {
      queue,
      runtimeSpec: {
        agent_image: IMAGE,
        sandbox_start_command: 'sleep infinity',
        // The agent's first instruction stamps the time (see scheduledToFirstInstruction).
        case_exec_command: `read up _ < /proc/uptime; echo "{\\"output\\":\\"$up\\"}"`,
      },
    });
    const cpuBefore = cpuSnapshot();
    const selfBefore = process.cpuUsage();
    dockerCalls.reset();
    // The clock starts when the message goes to the broker: the platform's connection handshake
    // before it, and Nagle's delay of its frames (see publishAsPlatform), are not our pipeline's.
    const { sentAt: started } = await publishAsPlatform(
      amqpUrl(stack.config),
      queue,
      message,
      stack.db.pool,
      { noDelay: true },
    );
    await eventually(
      async () => {
        const { rows: r } = await stack.db.pool.query<{ queue_status: string }>(
          'SELECT queue_status FROM experiments WHERE id = $1',
          [seeded.experimentId],
        );
        return r[0]?.queue_status === 'done' ? true : undefined;
      },
      600_000,
      'pipeline run',
    );
    // Timestamps written by the pipeline itself (not our 200 ms poll): publish → experiment finished.
    const { rows: span } = await stack.db.pool.query<{ first: Date; done: Date }>(
      `SELECT min(rc.started_at) AS first, e.finished_at AS done
         FROM run_cases rc JOIN experiments e ON e.id = rc.experiment_id WHERE rc.experiment_id = $1 GROUP BY e.finished_at`,
      [seeded.experimentId],
    );
    const { first, done } = span[0]!;
    const calls = dockerCalls.snapshot();
    const self = process.cpuUsage(selfBefore);
    const cpu = ourCpu(cpuBefore, cpuSnapshot(), (self.user + self.system) / 1e6);
    const { rows: phases } = await stack.db.pool.query<{
      ms: number;
      connect: number;
      exec: number;
      total: number;
    }>(
      `SELECT (result->'timings'->>'containerPhaseMs')::int AS ms, (result->'timings'->>'sandboxConnectMs')::int AS connect,
              (result->'timings'->>'caseExecMs')::int AS exec, (result->'timings'->>'totalMs')::int AS total
         FROM agentbench_case_results r JOIN run_cases rc ON rc.id = r.run_case_id WHERE rc.experiment_id = $1`,
      [seeded.experimentId],
    );
    return {
      rate: (cases / ((done.getTime() - started) / 1000)) * 60,
      phases,
      startupMs: first.getTime() - started,
      firstInstruction: await scheduledToFirstInstruction(seeded.experimentId),
      cpu,
      calls,
    };
  }

  async function floorRun(c: number) {
    collectGarbage();
    const cpuBefore = cpuSnapshot();
    const selfBefore = process.cpuUsage();
    const bare = await floor(stack.docker, c);
    const self = process.cpuUsage(selfBefore);
    return {
      rate: (CASES / bare.seconds) * 60,
      perCase: bare.perCase,
      cpu: ourCpu(cpuBefore, cpuSnapshot(), (self.user + self.system) / 1e6),
    };
  }

  /** --warm: the pool off (cold) or full (warm) for the next pipeline run. */
  async function setPool(warm: boolean): Promise<void> {
    const pool = stack.worker?.warmPool;
    if (!pool) throw new Error('--warm: the worker has no warm pool');
    pool.setSize(warm ? POOL_SIZE : 0);
    if (!warm) return;
    // Its first claim tells the pool the template; then it fills in the background.
    await pipelineRun(1, 1);
    await eventually(async () => (pool.idleCount >= POOL_SIZE ? true : undefined), 120_000, 'a full pool');
  }

  /** --warm, one level: rounds of cold pipeline, warm pipeline and floor (rotating order). */
  async function warmLevel(c: number): Promise<string> {
    type Pipe = Awaited<ReturnType<typeof pipelineRun>>;
    const cold: Pipe[] = [];
    const warm: Pipe[] = [];
    const floors: Array<Awaited<ReturnType<typeof floorRun>>> = [];
    const steps = [
      async () => {
        await setPool(false);
        cold.push(await pipelineRun(c));
      },
      async () => {
        await setPool(true);
        warm.push(await pipelineRun(c));
        await setPool(false);
      },
      async () => {
        floors.push(await floorRun(c));
      },
    ];
    for (let r = 0; r < ROUNDS; r++)
      for (let i = 0; i < steps.length; i++) await steps[(r + i) % steps.length]!();
    const first = (pipes: Pipe[]) => {
      const xs = pipes.flatMap((p) => p.firstInstruction);
      return `p50 ${percentile(xs, 50).toFixed(0)} ms p95 ${percentile(xs, 95).toFixed(0)} ms (${xs.length} cases)`;
    };
    const rate = (pipes: Array<{ rate: number }>) => median(pipes.map((p) => p.rate));
    const [coldRate, warmRate, floorRate] = [rate(cold), rate(warm), rate(floors)];
    return (
      `C=${c} scheduled → agent's first instruction: cold ${first(cold)} | warm ${first(warm)}` +
      `\n      throughput: cold ${coldRate.toFixed(0)} cases/min | warm ${warmRate.toFixed(0)} cases/min | floor (bare create → start → exec → remove) ${floorRate.toFixed(0)} cases/min` +
      ` | warm/cold ${(warmRate / coldRate).toFixed(2)}x warm/floor ${(warmRate / floorRate).toFixed(2)}x` +
      `\n      per round (cold/warm/floor cases/min): ${cold.map((p, i) => `${p.rate.toFixed(0)}/${warm[i]!.rate.toFixed(0)}/${floors[i]!.rate.toFixed(0)}`).join(', ')}` +
      `\n      cold ${perCaseText(cold.at(-1)!.calls, CASES)}` +
      `\n      warm ${perCaseText(warm.at(-1)!.calls, CASES)} — the pool's refill included` +
      `\n      cold ${cold.at(-1)!.cpu}\n      warm ${warm.at(-1)!.cpu}`
    );
  }

  try {
    await bareCase(stack.docker); // warm the image and the daemon once for both sides
    await pipelineRun(1); // and the worker, its workflow bundle and the database
    if (WARM) {
      for (const c of LEVELS) {
        rows.push(await warmLevel(c));
        process.stdout.write(`${rows.at(-1)}\n`);
      }
      process.stdout.write(
        `\nbench/sandbox-overhead --warm: ${CASES} cases per run, ${ROUNDS} rounds per level, pool size ${POOL_SIZE} (targets: warm p50 scheduled → first instruction < 100 ms at C=1, warm throughput at C=4 >= 1.2x the floor)\n${rows.join('\n')}\n`,
      );
      return;
    }
    for (const c of LEVELS) {
      const pipes: Array<Awaited<ReturnType<typeof pipelineRun>>> = [];
      const floors: Array<Awaited<ReturnType<typeof floorRun>>> = [];
      // Alternating order (P F, F P, P F, …): a drift of the machine hits both sides alike.
      for (let r = 0; r < ROUNDS; r++) {
        if (r % 2 === 0) {
          pipes.push(await pipelineRun(c));
          floors.push(await floorRun(c));
        } else {
          floors.push(await floorRun(c));
          pipes.push(await pipelineRun(c));
        }
      }
      const pipe = pipes.flatMap((p) => p.phases.map((x) => x.ms));
      const bare = floors.flatMap((f) => f.perCase);
      const pipeRate = median(pipes.map((p) => p.rate));
      const bareRate = median(floors.map((f) => f.rate));
      const part = (k: 'connect' | 'exec' | 'total') =>
        percentile(
          pipes.flatMap((p) => p.phases.map((x) => x[k])),
          50,
        );
      const firstInstruction = pipes.flatMap((p) => p.firstInstruction);
      const breakdown = `create+start ${part('connect')} ms, exec ${part('exec')} ms, logs ${part('total') - part('connect') - part('exec')} ms, rest (db, remove, telemetry drain) ${percentile(pipe, 50) - part('total')} ms; run start-up (publish → first case) ${median(pipes.map((p) => p.startupMs))} ms`;
      rows.push(
        [
          `C=${c}`,
          `pipeline ${pipeRate.toFixed(0)} cases/min p50 ${percentile(pipe, 50)} ms p95 ${percentile(pipe, 95)} ms`,
          `floor ${bareRate.toFixed(0)} cases/min p50 ${percentile(bare, 50)} ms p95 ${percentile(bare, 95)} ms`,
          `ratio p50 ${(percentile(pipe, 50) / percentile(bare, 50)).toFixed(2)}x throughput ${(pipeRate / bareRate).toFixed(2)}x`,
        ].join(' | ') +
          `\n      per round (pipeline/floor cases/min): ${pipes.map((p, i) => `${p.rate.toFixed(0)}/${floors[i]!.rate.toFixed(0)}`).join(', ')}` +
          `\n      scheduled → agent's first instruction: p50 ${percentile(firstInstruction, 50).toFixed(0)} ms p95 ${percentile(firstInstruction, 95).toFixed(0)} ms (${firstInstruction.length} cases)` +
          `\n      ${perCaseText(pipes.at(-1)!.calls, CASES)} — last pipeline round, the reaper's listings included` +
          `\n      pipeline p50 parts: ${breakdown}\n      pipeline ${pipes.at(-1)!.cpu}\n      floor    ${floors.at(-1)!.cpu}`,
      );
      process.stdout.write(`${rows[rows.length - 1]}\n`);
    }
    if (RUNTIMES.length > 1) rows.push(...(await compareRuntimes(stack.docker)));
    process.stdout.write(
      `\nbench/sandbox-overhead: ${CASES} cases per run, ${ROUNDS} rounds per level, medians of the rounds (targets: p50 ratio at C=1 <= 1.15, throughput ratio at C=4 >= 0.9)\n${rows.join('\n')}\n`,
    );
  } finally {
    await intake.stop();
  }
}

runBench(main);
