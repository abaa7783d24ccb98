/**
 * OTLP ingest benchmark: the collector on loopback, fed protobuf and JSON batches of 100 and 1000
 * spans by concurrent clients (in a worker thread, so they do not share the collector's event
 * loop) for a fixed time per scenario. Prints spans/s stored (COUNT from the database), request
 * p50/p99, CPU per 1000 spans, and as floor COPY of the same rows, already encoded, by as many
 * loops as clients: the 1000-span scenarios and that floor alternate for `--rounds` rounds (the
 * host's load drifts), each ratio against its own round's floor, medians reported. Also the plain
 * multi-row INSERT of the same rows, and query+map time of a case with 2000 spans.
 *
 * usage: node --import tsx bench/otel-ingest.ts [--seconds 8] [--clients 4] [--rounds 3]
 * Needs the local Postgres of the test suite (TEST_DATABASE_ADMIN_URL to override); creates and
 * drops its own database. */
import http from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { attributeToCase } from '../src/domain/otlp-attributes';
import { flattenSpans } from '../src/domain/otlp-flatten';
import type { SpanRow } from '../src/domain/otlp-rows';
import { createLogger } from '../src/logger';
import { INGEST_TOKEN_HEADER, OtelCollector } from '../src/otel/otel-collector';
import { copyStatement, SPAN_COLUMNS, spanCopyText } from '../src/otel/otel-copy-text';
import { INGEST_TOAST_COMPRESSION, insertSpans, queryCaseTelemetry } from '../src/otel/otel-repository';
import { decodeOtlpProtobuf } from '../src/otel/otlp-protobuf';
import { createTestDatabase } from '../test/support/database';
import { encode } from '../test/support/otel-fixtures';
import { benchSpans } from './support/otel-bench-spans';
import { cpuSecondsByName, cpuSnapshot } from './support/process-cpu';

const TARGET_SPANS_PER_SECOND = 30_000;
const TARGET_P99_MS_AT_1000 = 150;
const TARGET_COPY_RATIO = 0.8;
const TARGET_QUERY_MAP_MS = 50;
const BODY_VARIANTS = 4;

interface LoadJob {
  port: number;
  path: string;
  headers: Record<string, string>;
  bodies: Uint8Array[];
  clients: number;
  durationMs: number;
}

interface LoadResult {
  latenciesMs: number[];
  failures: Record<string, number>;
  elapsedMs: number;
}

// ---------------------------------------------------------------------------------------------
// Load generator (worker thread)

function postOnce(agent: http.Agent, job: LoadJob, body: Uint8Array): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port: job.port,
        path: job.path,
        method: 'POST',
        agent,
        headers: { ...job.headers, 'content-length': String(body.byteLength) },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function generateLoad(job: LoadJob): Promise<LoadResult> {
  const latenciesMs: number[] = [];
  const failures: Record<string, number> = {};
  const startedAt = performance.now();
  const deadline = startedAt + job.durationMs;
  await Promise.all(
    Array.from({ length: job.clients }, async (_, client) => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      for (let i = client; performance.now() < deadline; i += job.clients) {
        const sentAt = performance.now();
        try {
          const status = await postOnce(agent, job, job.bodies[i % job.bodies.length] as Uint8Array);
          if (status === 200) latenciesMs.push(performance.now() - sentAt);
          else failures[status] = (failures[status] ?? 0) + 1;
        } catch (err) {
          const key = (err as Error).message;
          failures[key] = (failures[key] ?? 0) + 1;
        }
      }
      agent.destroy();
    }),
  );
  return { latenciesMs, failures, elapsedMs: performance.now() - startedAt };
}

/**
 * The load, from a worker thread. `onReady` runs once the worker has loaded (tsx and this module's
 * imports: a second of CPU that is not the ingest's), just before the load starts.
 */
function runLoadInWorker(job: LoadJob, onReady: () => void): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    // A worker does not inherit tsx's loader hooks; it registers tsx's CommonJS hook itself.
    const bootstrap = `require('tsx/cjs'); require(${JSON.stringify(__filename)});`;
    const worker = new Worker(bootstrap, { eval: true, workerData: job });
    worker.on('message', (message: 'ready' | LoadResult) => {
      if (message !== 'ready') {
        resolve(message);
        return;
      }
      onReady();
      worker.postMessage('go');
    });
    worker.once('error', reject);
  });
}

// ---------------------------------------------------------------------------------------------
// Measurements (main thread)

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  if (sorted.length === 0) return NaN;
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

async function countRows(pool: pg.Pool, runCaseId: number): Promise<number> {
  const { rows } = await pool.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM otel_traces WHERE run_case_id = $1',
    [runCaseId],
  );
  return rows[0]?.n ?? 0;
}

/** The same columns the collector writes. */
const PLAIN_COLUMNS = SPAN_COLUMNS;
const JSON_COLUMNS = new Set(['attributes', 'resource_attributes', 'scope_attributes', 'raw']);

/** The floor: the plainest batched insert there is, one multi-row INSERT ... VALUES per batch. */
async function plainInsert(client: pg.PoolClient, rows: readonly SpanRow[]): Promise<void> {
  const values: unknown[] = [];
  const tuples = rows.map((row) => {
    const placeholders = PLAIN_COLUMNS.map((column) => {
      const value = row[column];
      values.push(JSON_COLUMNS.has(column) ? JSON.stringify(value) : value);
      return `$${values.length}`;
    });
    return `(${placeholders.join(',')})`;
  });
  await client.query(
    `INSERT INTO otel_traces (${PLAIN_COLUMNS.join(',')}) VALUES ${tuples.join(',')}`,
    values,
  );
}

/** The floor of the floors: COPY of rows already encoded, so only Postgres and the socket work. */
async function copyOnce(client: pg.PoolClient, text: Buffer): Promise<void> {
  const sink = client.query(copyFrom(copyStatement('traces')));
  await pipeline(Readable.from([text]), sink);
}

interface FloorResult {
  spansPerSecond: number;
  stored: number;
  postgresSeconds: number;
}

/** `clients` loops, each on its own connection, calling `store` until the time is up. */
async function floorLoops(
  pool: pg.Pool,
  clients: number,
  durationMs: number,
  runCaseId: number,
  store: (client: pg.PoolClient) => Promise<void>,
): Promise<FloorResult> {
  const connections = await Promise.all(Array.from({ length: clients }, () => pool.connect()));
  // The compression the collector's COPY uses (otel-repository), so the floor stores the same bytes.
  await Promise.all(connections.map((client) => client.query(INGEST_TOAST_COMPRESSION)));
  const cpuBefore = cpuSnapshot();
  const startedAt = performance.now();
  const deadline = startedAt + durationMs;
  try {
    await Promise.all(
      connections.map(async (client) => {
        while (performance.now() < deadline) await store(client);
      }),
    );
  } finally {
    await Promise.all(connections.map((client) => client.query('RESET default_toast_compression')));
    for (const client of connections) client.release();
  }
  const elapsedMs = performance.now() - startedAt;
  const postgresSeconds = cpuSecondsByName(cpuBefore, cpuSnapshot()).get('postgres') ?? 0;
  const stored = await countRows(pool, runCaseId);
  await pool.query('TRUNCATE otel_traces');
  return { spansPerSecond: stored / (elapsedMs / 1000), stored, postgresSeconds };
}

/**
 * CPU per 1000 spans stored. Postgres is shared with whatever else runs on the machine, so its
 * figure is an upper bound; this process's figure includes the load generator's thread.
 */
function cpuPerSpan(r: { stored: number; postgresSeconds: number }): string {
  return `${((r.postgresSeconds / Math.max(1, r.stored)) * 1e6).toFixed(0)} cpu ms/1000 spans`;
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      seconds: { type: 'string', default: '8' },
      clients: { type: 'string', default: '4' },
      rounds: { type: 'string', default: '3' },
    },
  });
  const rounds = Math.max(1, Number(args.rounds));
  const durationMs = Number(args.seconds) * 1000;
  const clients = Number(args.clients);
  const db = await createTestDatabase();
  const log = createLogger({ level: 'warn', name: 'bench' });
  const collector = new OtelCollector({
    pool: db.pool,
    log,
    host: '127.0.0.1',
    port: 0,
    maxBodyBytes: 64 * 1024 * 1024,
    allowUntokened: false,
  });
  const { port } = await collector.start();
  console.log(
    `otel ingest bench: ${clients} clients, ${durationMs / 1000} s per scenario, ${rounds} rounds at 1000 spans/request, collector on 127.0.0.1:${port}\n`,
  );

  interface ScenarioResult {
    label: string;
    perRequest: number;
    spansPerSecond: number;
    p50: number;
    p99: number;
  }
  let runCaseId = 1000;

  /** The collector fed `perRequest`-span bodies of `format` by the load generator for one round. */
  const scenario = async (perRequest: number, format: 'protobuf' | 'json'): Promise<ScenarioResult> => {
    runCaseId++;
    const token = collector.issueToken({ runCaseId, experimentId: 1, dataItemId: 1 });
    const bodies = Array.from({ length: BODY_VARIANTS }, (_, v) => {
      const spans = benchSpans(perRequest, runCaseId * 10 + v);
      return format === 'protobuf' ? encode.tracesProtobuf(spans) : encode.tracesJson(spans);
    });
    const contentType = format === 'protobuf' ? 'application/x-protobuf' : 'application/json';
    let cpuBefore = cpuSnapshot();
    let selfBefore = process.cpuUsage();
    const load = await runLoadInWorker(
      {
        port,
        path: '/v1/traces',
        headers: { 'content-type': contentType, [INGEST_TOKEN_HEADER]: token },
        bodies,
        clients,
        durationMs,
      },
      () => {
        cpuBefore = cpuSnapshot();
        selfBefore = process.cpuUsage();
      },
    );
    const postgresSeconds = cpuSecondsByName(cpuBefore, cpuSnapshot()).get('postgres') ?? 0;
    const self = process.cpuUsage(selfBefore);
    const stored = await countRows(db.pool, runCaseId);
    const latencies = [...load.latenciesMs].sort((a, b) => a - b);
    const label = `${format.padEnd(8)} ${String(perRequest).padStart(4)} spans/request`;
    const row = {
      label,
      perRequest,
      spansPerSecond: stored / (load.elapsedMs / 1000),
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
    };
    const failed = Object.keys(load.failures).length ? `  failures ${JSON.stringify(load.failures)}` : '';
    console.log(
      `${label}: ${Math.round(row.spansPerSecond).toLocaleString('en-US').padStart(7)} spans/s stored ` +
        `(${stored.toLocaleString('en-US')} rows, ${latencies.length} requests)  p50 ${row.p50.toFixed(1)} ms  p99 ${row.p99.toFixed(1)} ms  ` +
        `(${((bodies[0]?.byteLength ?? 0) / 1024).toFixed(0)} KiB/request)  postgres ${cpuPerSpan({ stored, postgresSeconds })}, ` +
        `collector+clients ${cpuPerSpan({ stored, postgresSeconds: (self.user + self.system) / 1e6 })}${failed}`,
    );
    collector.revokeToken(token);
    await db.pool.query('TRUNCATE otel_traces');
    return row;
  };

  // Floors: the 1000-span protobuf batch's rows, stored by loops that do nothing else.
  const floorRows = (caseId: number) =>
    attributeToCase(flattenSpans(decodeOtlpProtobuf('traces', encode.tracesProtobuf(benchSpans(1000, 1)))), {
      runCaseId: caseId,
      experimentId: 1,
      dataItemId: 1,
    });
  const copyFloorRound = async (): Promise<FloorResult> => {
    runCaseId++;
    const copyText = spanCopyText(floorRows(runCaseId));
    const floor = await floorLoops(db.pool, clients, durationMs, runCaseId, (client) =>
      copyOnce(client, copyText),
    );
    console.log(
      `COPY floor (the same rows, text encoded once, 1000 rows/COPY, ${clients} loops): ` +
        `${Math.round(floor.spansPerSecond).toLocaleString('en-US').padStart(7)} spans/s, postgres ${cpuPerSpan(floor)}`,
    );
    return floor;
  };

  const results: ScenarioResult[] = [];
  const copyRatios = new Map<string, number[]>();
  try {
    for (const format of ['protobuf', 'json'] as const) results.push(await scenario(100, format));
    // The host is shared and its load drifts over a run: the COPY floor and the 1000-span
    // scenarios alternate, each ratio against the floor of its own round, medians reported.
    const copyFloors: number[] = [];
    for (let round = 1; round <= rounds; round++) {
      console.log(`\nround ${round}/${rounds}`);
      const floor = await copyFloorRound();
      copyFloors.push(floor.spansPerSecond);
      for (const format of ['protobuf', 'json'] as const) {
        const row = await scenario(1000, format);
        results.push(row);
        const ratios = copyRatios.get(row.label) ?? [];
        ratios.push(row.spansPerSecond / floor.spansPerSecond);
        copyRatios.set(row.label, ratios);
      }
    }
    runCaseId++;
    const insertRows = floorRows(runCaseId);
    const insertFloor = await floorLoops(db.pool, clients, durationMs, runCaseId, (client) =>
      plainInsert(client, insertRows),
    );
    console.log(
      `\nplain multi-row INSERT, 1000 rows/statement, ${clients} loops: ` +
        `${Math.round(insertFloor.spansPerSecond).toLocaleString('en-US')} spans/s, postgres ${cpuPerSpan(insertFloor)}`,
    );
    console.log(
      `\nmedians of ${rounds} rounds: COPY floor ${Math.round(median(copyFloors)).toLocaleString('en-US')} spans/s`,
    );
    for (const [label, ratios] of copyRatios) {
      const stored = median(results.filter((r) => r.label === label).map((r) => r.spansPerSecond));
      console.log(
        `  ${label}: ${Math.round(stored).toLocaleString('en-US')} spans/s, / COPY floor = ${median(ratios).toFixed(2)} ` +
          `(rounds: ${ratios.map((r) => r.toFixed(2)).join(', ')}), / INSERT floor = ${(stored / insertFloor.spansPerSecond).toFixed(2)}`,
      );
    }

    // Query + map of a case with 2000 spans.
    runCaseId++;
    const caseRows = attributeToCase(
      flattenSpans(decodeOtlpProtobuf('traces', encode.tracesProtobuf(benchSpans(2000, 2)))),
      { runCaseId, experimentId: 1, dataItemId: 1 },
    );
    await insertSpans(db.pool, caseRows);
    await db.pool.query('ANALYZE otel_traces');
    const timings: number[] = [];
    for (let i = 0; i < 30; i++) {
      const t0 = performance.now();
      const telemetry = await queryCaseTelemetry(db.pool, runCaseId, Date.now());
      timings.push(performance.now() - t0);
      if (telemetry.steps.length !== 2000)
        throw new Error(`expected 2000 steps, got ${telemetry.steps.length}`);
    }
    timings.sort((a, b) => a - b);
    const queryP50 = percentile(timings, 50);
    console.log(
      `\nquery+map, case with 2000 spans (30 runs): p50 ${queryP50.toFixed(1)} ms, max ${timings[timings.length - 1]?.toFixed(1)} ms`,
    );

    const at1000 = [...copyRatios.keys()];
    const medianOf = (label: string, pick: (r: ScenarioResult) => number) =>
      median(results.filter((r) => r.label === label).map(pick));
    const best = Math.max(...at1000.map((label) => medianOf(label, (r) => r.spansPerSecond)));
    const worstP99 = Math.max(...at1000.map((label) => medianOf(label, (r) => r.p99)));
    const worstCopyRatio = Math.min(...[...copyRatios.values()].map(median));
    const verdict = (ok: boolean) => (ok ? 'met' : 'MISSED');
    console.log('\ntargets (medians of the rounds):');
    console.log(
      `  >= ${TARGET_SPANS_PER_SECOND.toLocaleString('en-US')} spans/s stored at 1000 spans/request: best ${Math.round(best).toLocaleString('en-US')} -> ${verdict(best >= TARGET_SPANS_PER_SECOND)}`,
    );
    console.log(
      `  p99 < ${TARGET_P99_MS_AT_1000} ms at 1000 spans/request: worst ${worstP99.toFixed(1)} ms -> ${verdict(worstP99 < TARGET_P99_MS_AT_1000)}`,
    );
    console.log(
      `  >= ${TARGET_COPY_RATIO}x the COPY floor at 1000 spans/request: worst ${worstCopyRatio.toFixed(2)}x -> ${verdict(worstCopyRatio >= TARGET_COPY_RATIO)}`,
    );
    console.log(
      `  query+map of 2000 spans < ${TARGET_QUERY_MAP_MS} ms: p50 ${queryP50.toFixed(1)} ms -> ${verdict(queryP50 < TARGET_QUERY_MAP_MS)}`,
    );
  } finally {
    await collector.stop();
    await db.drop();
  }
}

if (isMainThread) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
} else {
  parentPort?.once('message', () => {
    void generateLoad(workerData as LoadJob).then((result) => parentPort?.postMessage(result));
  });
  parentPort?.postMessage('ready');
}
