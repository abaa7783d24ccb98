/**
 * bench/api — what the HTTP API costs on top of what it calls (issue: HTTP API).
 *
 *   node --import tsx bench/api.ts [--seconds 5] [--connections 16] [--rounds 5]
 *
 * 1. Requests/s of `GET /v1/runs/{id}` (a finished run, keep-alive, `connections` at once) against
 *    the real server on loopback, the load coming from a child process (as a client would: the
 *    server's event loop does server work only), and as the baseline in the same run the same read
 *    done in-process by the server's process (`summarizeRun`: the Postgres counts and the Temporal
 *    describe, no HTTP), same concurrency. Alternating rounds, medians.
 * 2. Time from `POST /v1/runs` (a one-case experiment file) to its first case `running` (the case's
 *    started_at, written by the worker), and as the baseline a bare Temporal client start of the
 *    same workflow for rows dispatched and stored beforehand (`client.workflow.start`, then the same
 *    wait). Alternating, medians. The difference is what the API adds: HTTP, validation, auth, the
 *    platform rows and the run request in one transaction.
 * Everything runs on this machine against the shared services of scripts/setup.
 */
import { execFile } from 'node:child_process';
import { parseArgs } from 'node:util';
import { Pool as HttpPool } from 'undici';
import type { ExperimentRunInput } from '../src/domain/experiment-run';
import { workflowIdForRun } from '../src/domain/experiment-run';
import { SA } from '../src/domain/search-attributes';
import { dispatchExperimentFile } from '../src/local-run/platform-dispatch';
import { experimentFileSchema } from '../src/local-run/experiment-file';
import { summarizeRun, WorkflowViews } from '../src/runs/run-summary';
import { runSettings, storeRunRequest } from '../src/temporal/run-starter';
import { startTestApi, WRITE_TOKEN } from '../test/support/api';
import { startStack } from '../test/support/stack';
import { createLogger } from '../src/logger';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    connections: { type: 'string', default: '16' },
    rounds: { type: 'string', default: '5' },
    // Internal: this file re-run as the HTTP load generator (its own process, like any client).
    load: { type: 'string' },
  },
});
const SECONDS = Number(values.seconds);
const CONNECTIONS = Number(values.connections);
const ROUNDS = Number(values.rounds);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
};

/** `concurrency` loops calling `fn` until `seconds` pass; returns calls per second. */
async function throughput(fn: () => Promise<void>, concurrency: number, seconds: number): Promise<number> {
  const deadline = Date.now() + seconds * 1000;
  let calls = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (Date.now() < deadline) {
        await fn();
        calls += 1;
      }
    }),
  );
  return calls / (Number(process.hrtime.bigint() - t0) / 1e9);
}

const oneCaseFile = (name: string) =>
  experimentFileSchema.parse({
    name,
    dataset: { name: 'bench api', items: [{ user_input: 'q' }] },
    agent: {
      name: 'bench',
      agent_key: 'bench-api',
      runtime_spec_json: {
        agent_image: 'bench/busybox:latest',
        sandbox_start_command: 'sleep 3600',
        case_exec_command: `echo '{"output":"ok"}'`,
      },
    },
  });

/** Runs as the child: `--load <url> <token> <connections> <seconds>`; prints requests/s. */
async function loadGenerator(spec: string): Promise<void> {
  const [url, token, connections, seconds] = spec.split(' ');
  const target = new URL(url as string);
  const http = new HttpPool(target.origin, { connections: Number(connections), pipelining: 1 });
  const rate = await throughput(
    async () => {
      const res = await http.request({
        method: 'GET',
        path: target.pathname,
        headers: { authorization: `Bearer ${token}` },
      });
      if (res.statusCode !== 200) throw new Error(`GET answered ${res.statusCode}`);
      await res.body.dump();
    },
    Number(connections),
    Number(seconds),
  );
  await http.close();
  process.stdout.write(`${JSON.stringify({ rate })}\n`);
}

function loadFromChild(url: string, connections: number, seconds: number): Promise<number> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [...process.execArgv, __filename, '--load', `${url} ${WRITE_TOKEN} ${connections} ${seconds}`],
      (err, stdout) =>
        err
          ? reject(err)
          : resolve((JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as { rate: number }).rate),
    );
  });
}

async function main(): Promise<void> {
  if (values.load) return loadGenerator(values.load);
  const stack = await startStack();
  const api = await startTestApi(stack);
  const http = new HttpPool(api.baseUrl, { connections: CONNECTIONS, pipelining: 1 });
  const pool = stack.db.pool;
  try {
    const firstRunning = async (workflowId: string, since: number): Promise<number> => {
      for (;;) {
        const { rows } = await pool.query<{ started: Date | null }>(
          `SELECT min(rc.started_at) AS started FROM agentbench_case_inputs ci JOIN run_cases rc ON rc.id = ci.run_case_id
            WHERE ci.workflow_id = $1`,
          [workflowId],
        );
        const started = rows[0]?.started;
        if (started) return started.getTime() - since;
        await new Promise((r) => setTimeout(r, 20));
      }
    };

    // --- 2. POST → first case running, vs a bare Temporal start --------------------------------
    const viaApi: number[] = [];
    const bare: number[] = [];
    const done: string[] = [];
    // Round 0 warms both paths up (route and schema compilation, connections) and is not counted.
    for (let round = 0; round <= ROUNDS; round++) {
      const counted = round > 0;
      {
        const t0 = Date.now();
        const res = await http.request({
          method: 'POST',
          path: '/v1/runs',
          headers: { authorization: `Bearer ${WRITE_TOKEN}`, 'content-type': 'application/json' },
          body: JSON.stringify(oneCaseFile(`bench api ${round}`)),
        });
        const { run_id: runId } = (await res.body.json()) as { run_id: string };
        const ms = await firstRunning(runId, t0);
        if (counted) viaApi.push(ms);
        await stack.client.workflow.getHandle(runId).result();
        done.push(runId);
      }
      {
        // The baseline's rows and run request are ready before its clock starts.
        const message = await dispatchExperimentFile(pool, oneCaseFile(`bench bare ${round}`));
        const workflowId = workflowIdForRun(message.experiment.id, message.message_id);
        await storeRunRequest(pool, message, workflowId, {
          config: stack.config,
          log: createLogger({ level: 'silent' }),
        });
        const input: ExperimentRunInput = {
          experimentId: message.experiment.id,
          messageId: message.message_id,
          totalCases: 1,
          settings: runSettings(stack.config, message),
        };
        const t0 = Date.now();
        await stack.client.workflow.start('experimentRunWorkflow', {
          workflowId,
          taskQueue: stack.config.temporal.taskQueue,
          args: [input],
          typedSearchAttributes: [{ key: SA.experimentId, value: String(message.experiment.id) }],
        });
        const ms = await firstRunning(workflowId, t0);
        if (counted) bare.push(ms);
        await stack.client.workflow.getHandle(workflowId).result();
      }
    }

    // --- 1. GET /v1/runs/{id} requests/s, vs the same read in-process ---------------------------
    const runId = done[0] as string;
    const url = `${api.baseUrl}/v1/runs/${encodeURIComponent(runId)}`;
    const views = new WorkflowViews(stack.client);
    const readDeps = { client: stack.client, pool, config: api.config };
    const direct = async () => {
      if (!(await summarizeRun(readDeps, views, runId))) throw new Error('no run');
    };
    await loadFromChild(url, CONNECTIONS, 1);
    await throughput(direct, CONNECTIONS, 1);
    const httpRates: number[] = [];
    const directRates: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      httpRates.push(await loadFromChild(url, CONNECTIONS, SECONDS));
      directRates.push(await throughput(direct, CONNECTIONS, SECONDS));
    }

    const rps = median(httpRates);
    const base = median(directRates);
    const apiMs = median(viaApi);
    const bareMs = median(bare);
    process.stdout.write(
      `\nbench/api (${ROUNDS} alternating rounds, medians; shared 2-core machine, other agents' load included)\n` +
        `GET /v1/runs/{id}: ${rps.toFixed(0)} requests/s over HTTP (${CONNECTIONS} keep-alive connections from another process) vs ${base.toFixed(0)} reads/s in-process (summarizeRun) → ratio ${(rps / base).toFixed(2)}\n` +
        `POST /v1/runs → first case running: ${apiMs} ms vs ${bareMs} ms for a bare Temporal client start of rows prepared beforehand → ratio ${(apiMs / bareMs).toFixed(2)} (+${apiMs - bareMs} ms)\n` +
        `  per round: api ${viaApi.join(', ')} ms; bare ${bare.join(', ')} ms\n`,
    );
  } finally {
    await http.close();
    await api.stop();
    await stack.stop();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
