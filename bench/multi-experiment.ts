/**
 * bench/multi-experiment — several experiments at once whose agents wait (as an agent waiting on
 * its LLM does), through the real pipeline: messages published to RabbitMQ → bridge → Temporal
 * workflows → activities → Postgres.
 *
 *   node --import tsx bench/multi-experiment.ts [--experiments 4] [--cases 8] [--wait-seconds 2]
 *     [--concurrency 8] [--live 16] [--rounds 2]
 *
 * Each case's agent sleeps `wait-seconds` then answers. Prints cases/min from the first publish to
 * the last experiment finished, and in the same run the floor: the same number of cases, each a
 * bare create → start → exec (the same sleep) → remove through dockerode, as many at once as the
 * worker's live-container limit allows. Rounds alternate pipeline and floor; medians are reported.
 */
import { runBench, startBenchIntake } from './support/bench-intake';
import { parseArgs } from 'node:util';
import type Dockerode from 'dockerode';
import { amqpUrl } from '../src/config';
import { createLogger } from '../src/logger';
import { startExperimentRun } from '../src/temporal/run-starter';
import { seedExperiment } from '../test/support/database';
import { buildPlatformMessage, publishAsPlatform } from '../test/support/platform';
import { eventually } from '../test/support/stack';

const { values } = parseArgs({
  options: {
    experiments: { type: 'string', default: '4' },
    cases: { type: 'string', default: '8' },
    'wait-seconds': { type: 'string', default: '2' },
    concurrency: { type: 'string', default: '8' },
    live: { type: 'string', default: '16' },
    rounds: { type: 'string', default: '2' },
  },
});
const EXPERIMENTS = Number(values.experiments);
const CASES = Number(values.cases);
const WAIT_SECONDS = Number(values['wait-seconds']);
const CONCURRENCY = Number(values.concurrency);
const LIVE = Number(values.live);
const ROUNDS = Number(values.rounds);
const IMAGE = 'bench/busybox:latest';
const AGENT = `sleep ${WAIT_SECONDS}; echo '{"output":"ok"}'`;

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

/** The floor of one case: the Docker calls it needs and the agent's wait, nothing else. */
async function bareCase(docker: Dockerode): Promise<void> {
  const container = await docker.createContainer({
    Image: IMAGE,
    Cmd: ['sh', '-lc', 'sleep infinity'],
    HostConfig: { ExtraHosts: ['host.docker.internal:host-gateway'] },
  });
  try {
    await container.start();
    const exec = await container.exec({ Cmd: ['sh', '-lc', AGENT], AttachStdout: true, AttachStderr: true });
    const stream = await exec.start({ hijack: true, stdin: false });
    await new Promise<void>((resolve, reject) => {
      stream.on('end', resolve).on('close', resolve).on('error', reject);
      stream.resume();
    });
    await exec.inspect();
  } finally {
    await container.remove({ force: true });
  }
}

async function floorRun(docker: Dockerode): Promise<number> {
  const total = EXPERIMENTS * CASES;
  let next = 0;
  const startedAt = Date.now();
  await Promise.all(
    Array.from({ length: Math.min(LIVE, EXPERIMENTS * CONCURRENCY) }, async () => {
      while (next++ < total) await bareCase(docker);
    }),
  );
  return (total / ((Date.now() - startedAt) / 1000)) * 60;
}

async function main(): Promise<void> {
  const log = createLogger({ level: 'silent' });
  const intake = await startBenchIntake({
    log,
    liveContainers: LIVE,
    startRun: (stack) => (message, meta) =>
      startExperimentRun(
        { client: stack.client, pool: stack.db.pool, config: stack.config, log },
        message,
        meta.dedupSuffix,
        { concurrentCases: CONCURRENCY },
      ),
  });
  const { stack, queue } = intake;

  async function pipelineRun(): Promise<number> {
    const seeded = await Promise.all(
      Array.from({ length: EXPERIMENTS }, () => seedExperiment(stack.db.pool, { cases: CASES })),
    );
    const messages = seeded.map((s) =>
      buildPlatformMessage(s, {
        queue,
        runtimeSpec: {
          agent_image: IMAGE,
          sandbox_start_command: 'sleep infinity',
          case_exec_command: AGENT,
        },
      }),
    );
    const sent = await Promise.all(
      messages.map((m) =>
        publishAsPlatform(amqpUrl(stack.config), queue, m, stack.db.pool, { noDelay: true }),
      ),
    );
    const firstSent = Math.min(...sent.map((s) => s.sentAt));
    const ids = seeded.map((s) => s.experimentId);
    // The experiments' own finish timestamps, not this poll's.
    const finishedAt = await eventually(
      async () => {
        const { rows } = await stack.db.pool.query<{ done: number; last: Date | null }>(
          `SELECT count(*) FILTER (WHERE queue_status = 'done')::int AS done, max(finished_at) AS last
             FROM experiments WHERE id = ANY($1)`,
          [ids],
        );
        const row = rows[0];
        return row && row.done === ids.length && row.last ? row.last.getTime() : undefined;
      },
      600_000,
      'experiments finished',
    );
    return ((EXPERIMENTS * CASES) / ((finishedAt - firstSent) / 1000)) * 60;
  }

  try {
    await bareCase(stack.docker); // the image and the daemon, warm for both sides
    const pipes: number[] = [];
    const floors: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      if (round % 2 === 0) {
        pipes.push(await pipelineRun());
        floors.push(await floorRun(stack.docker));
      } else {
        floors.push(await floorRun(stack.docker));
        pipes.push(await pipelineRun());
      }
      process.stdout.write(
        `round ${round + 1}: pipeline ${pipes.at(-1)!.toFixed(0)} cases/min, floor ${floors.at(-1)!.toFixed(0)} cases/min\n`,
      );
    }
    const pipe = median(pipes);
    const bare = median(floors);
    const ideal = (Math.min(LIVE, EXPERIMENTS * CONCURRENCY) * 60) / WAIT_SECONDS;
    process.stdout.write(
      `\nbench/multi-experiment: ${EXPERIMENTS} experiments x ${CASES} cases, agent waits ${WAIT_SECONDS} s, ` +
        `${CONCURRENCY} cases at once per experiment, ${LIVE} live containers per worker, ${ROUNDS} rounds (medians)\n` +
        `  pipeline ${pipe.toFixed(0)} cases/min | floor ${bare.toFixed(0)} cases/min | ratio ${(pipe / bare).toFixed(2)}x ` +
        `| (the waits alone would allow ${ideal.toFixed(0)} cases/min)\n`,
    );
  } finally {
    await intake.stop();
  }
}

runBench(main);
