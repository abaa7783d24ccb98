import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { loadConfig } from '../../src/config';
import { createDockerClient } from '../../src/docker/docker-client';
import { DockerSandbox } from '../../src/docker/docker-sandbox';
import { Semaphore } from '../../src/docker/semaphore';
import { caseOtelEnv, OtelCollector } from '../../src/otel/otel-collector';
import {
  createTestDatabase,
  seedExperiment,
  type SeededExperiment,
  type TestDatabase,
} from '../support/database';
import { baseSpec, captureLogger, newTestRunId, removeTestContainers, SOCKET_PATH } from './docker-fixtures';

/**
 * Issue 15 acceptance, collector part: a hostile case container attacks the worker's OTel
 * collector (production limits) — nested, huge, truncated and chunked bodies, a big valid body,
 * forged ids and tokens, wrong content types, a flood, slow uploads, too many connections — once
 * from an address bound to a live case (authenticated, hostile) and once from an unbound one
 * (unauthenticated). Meanwhile a well-behaved OTel SDK agent runs its cases, which must finish
 * with all their spans, while this process (the worker) keeps its event-loop delay p99 < 100 ms
 * and its RSS < 600 MB.
 */

const AGENT_BASE = 'bench/agent-base:bookworm';
const SDK_AGENT = 'bench/otel-sdk-agent:latest';
const REPO = path.resolve(__dirname, '../..');
const ATTACK = readFileSync(path.join(REPO, 'test/fixtures/otel-hostile/attack.py'), 'utf8');
const GOOD_RUNS = 3;
/** attack.py's BIG_VALID_SPANS. */
const BIG_VALID_SPANS = 12_000;

type Outcomes = Record<string, Record<string, number>>;

const docker = createDockerClient(SOCKET_PATH);
const runId = newTestRunId();
const { log } = captureLogger();
const sandbox = new DockerSandbox(docker, new Semaphore(4), log);

function outcomesOf(stdout: string): Outcomes {
  const line = stdout
    .trim()
    .split('\n')
    .reverse()
    .find((l) => l.startsWith('{'));
  assert.ok(line, `no result line in the attacker's stdout: ${stdout.slice(-2000)}`);
  return JSON.parse(line) as Outcomes;
}

/** The outcomes of `kind` are all among `allowed`; `required` ones occurred at least once. */
function expectOutcomes(all: Outcomes, kind: string, allowed: string[], required: string[]): void {
  const seen = all[kind] ?? {};
  const unexpected = Object.keys(seen).filter((o) => !allowed.includes(o));
  assert.deepEqual(unexpected, [], `${kind}: unexpected outcomes in ${JSON.stringify(seen)}`);
  for (const r of required) assert.ok((seen[r] ?? 0) > 0, `${kind}: no ${r} in ${JSON.stringify(seen)}`);
}

describe('the OTel collector against a hostile case container (production limits)', () => {
  let db: TestDatabase;
  let seeded: SeededExperiment;
  let collector: OtelCollector;
  let port: number;

  before(async () => {
    execFileSync(path.join(REPO, 'scripts/build-images'), { stdio: 'inherit' });
    db = await createTestDatabase();
    seeded = await seedExperiment(db.pool, { cases: 2 });
    const production = loadConfig({});
    collector = new OtelCollector({
      pool: db.pool,
      log,
      host: '0.0.0.0',
      port: 0,
      maxBodyBytes: production.otel.maxBodyBytes,
      allowUntokened: production.otel.allowUntokenedIngest,
      anyContentType: production.otel.anyContentType,
    });
    ({ port } = await collector.start());
  });

  after(async () => {
    await removeTestContainers(docker, runId);
    await collector.stop();
    await db.drop();
  });

  test('attacks are refused, the well-behaved case keeps all its spans, the worker stays responsive', async () => {
    const hostileCase = {
      runCaseId: seeded.runCaseIds[0] as number,
      experimentId: seeded.experimentId,
      dataItemId: seeded.dataItemIds[0] as number,
    };
    const goodCase = {
      runCaseId: seeded.runCaseIds[1] as number,
      experimentId: seeded.experimentId,
      dataItemId: seeded.dataItemIds[1] as number,
    };
    const hostileToken = collector.issueToken(hostileCase);
    const goodToken = collector.issueToken(goodCase);

    const loopDelay = monitorEventLoopDelay({ resolution: 10 });
    let maxRss = 0;
    const sampleRss = () => (maxRss = Math.max(maxRss, process.memoryUsage().rss));
    const rssTimer = setInterval(sampleRss, 100);
    loopDelay.enable();
    const startedAt = Date.now();
    try {
      const attack = async (bound: boolean): Promise<Outcomes> => {
        const container = await sandbox.createAndStart(
          baseSpec(runId, {
            image: AGENT_BASE,
            limits: { memoryMb: 512, cpus: 0.5, pidsLimit: 256 },
            files: [{ path: '/benchmark/attack.py', content: ATTACK, mode: 0o644 }],
          }),
        );
        if (bound) for (const ip of container.addresses) collector.bindSource(ip, hostileToken);
        const result = await sandbox.exec(container.containerId, {
          command: `python3 /benchmark/attack.py host.docker.internal ${port}`,
          timeoutMs: 240_000,
        });
        assert.equal(result.exitCode, 0, result.stderr.slice(-3000));
        await sandbox.remove(container.containerId);
        return outcomesOf(result.stdout);
      };
      const wellBehaved = async (): Promise<number> => {
        let runs = 0;
        for (let i = 0; i < GOOD_RUNS; i++) {
          const env = caseOtelEnv({
            endpoint: `http://host.docker.internal:${port}`,
            token: goodToken,
            serviceName: 'well-behaved',
            ...goodCase,
          });
          const { containerId } = await sandbox.createAndStart(
            baseSpec(runId, { image: SDK_AGENT, env, limits: { memoryMb: 512, cpus: 0.5, pidsLimit: 128 } }),
          );
          const result = await sandbox.exec(containerId, {
            command: `python3 /agent/run_case.py run ${i}`,
            timeoutMs: 120_000,
          });
          assert.equal(result.exitCode, 0, `${result.stdout}\n${result.stderr}`);
          assert.match(result.stdout, /"spans_flushed": true/);
          await sandbox.remove(containerId);
          runs++;
        }
        return runs;
      };

      const [authenticated, unauthenticated, goodRuns] = await Promise.all([
        attack(true),
        attack(false),
        wellBehaved(),
      ]);
      loopDelay.disable();
      sampleRss();
      const p99Ms = loopDelay.percentile(99) / 1e6;
      const maxMs = loopDelay.max / 1e6;
      const rssMb = maxRss / 2 ** 20;
      console.log(
        JSON.stringify({
          hostile_suite: {
            seconds: Math.round((Date.now() - startedAt) / 1000),
            event_loop_delay_p99_ms: Number(p99Ms.toFixed(1)),
            event_loop_delay_max_ms: Number(maxMs.toFixed(1)),
            rss_max_mb: Math.round(rssMb),
            authenticated,
            unauthenticated,
          },
        }),
      );

      // From a live case's own address: authenticated, and still refused for each kind of abuse.
      const gone = ['reset', 'closed'];
      expectOutcomes(authenticated, 'nested', ['400', '429', ...gone], ['400']);
      expectOutcomes(authenticated, 'huge', ['413', ...gone], ['413']);
      expectOutcomes(authenticated, 'huge_chunked', ['413', '429', ...gone], ['413']);
      expectOutcomes(authenticated, 'truncated', ['400', '429'], ['400']);
      expectOutcomes(authenticated, 'big_valid', ['200', '429'], ['200']);
      expectOutcomes(authenticated, 'forged_id', ['400', '429'], ['400']);
      expectOutcomes(authenticated, 'forged_token', ['403', '429'], ['403']);
      expectOutcomes(authenticated, 'content_type', ['415', '429'], ['415']);
      expectOutcomes(authenticated, 'flood', ['400', '429', ...gone, 'refused'], ['400']);
      expectOutcomes(authenticated, 'slow', ['408', '429', ...gone, 'refused'], ['408', '429']);
      // From an unbound address nothing gets past the headers.
      for (const kind of Object.keys(unauthenticated)) {
        const allowed = kind === 'forged_token' ? ['403'] : ['401'];
        expectOutcomes(unauthenticated, kind, [...allowed, '429', ...gone, 'refused'], []);
      }
      expectOutcomes(unauthenticated, 'nested', ['401', ...gone], ['401']);
      expectOutcomes(unauthenticated, 'forged_token', ['403', ...gone], ['403']);

      const count = async (runCaseId: number) =>
        (
          await db.pool.query<{ n: number }>(
            'SELECT count(*)::int AS n FROM otel_traces WHERE run_case_id = $1',
            [runCaseId],
          )
        ).rows[0]?.n;
      assert.equal(goodRuns, GOOD_RUNS);
      assert.equal(await count(goodCase.runCaseId), GOOD_RUNS * 4, 'every span of every well-behaved run');
      // What the hostile case could store: its own valid big bodies, under its own case only.
      assert.equal(
        await count(hostileCase.runCaseId),
        (authenticated.big_valid?.['200'] ?? 0) * BIG_VALID_SPANS,
      );
      const { rows } = await db.pool.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM otel_traces WHERE run_case_id IS NULL OR NOT (run_case_id = ANY($1::bigint[]))',
        [[goodCase.runCaseId, hostileCase.runCaseId]],
      );
      assert.equal(rows[0]?.n, 0, 'nothing stored outside the two cases');

      assert.ok(p99Ms < 100, `event-loop delay p99 ${p99Ms.toFixed(1)} ms`);
      assert.ok(rssMb < 600, `RSS ${rssMb.toFixed(0)} MB`);
    } finally {
      clearInterval(rssTimer);
      loopDelay.disable();
      collector.revokeToken(hostileToken);
      collector.revokeToken(goodToken);
    }
  });
});
