import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { flattenLogs, flattenSpans } from '../../src/domain/otlp-flatten';
import type { SpanRow } from '../../src/domain/otlp-rows';
import {
  COPY_CHUNK_ROWS,
  insertLogs,
  insertSpans,
  queryCaseTelemetry,
  SPAN_QUERY_LIMIT,
} from '../../src/otel/otel-repository';
import { createTestDatabase, type TestDatabase } from '../support/database';
import { fakeTrace, sdkSpans, encode } from '../support/otel-fixtures';
import { decodeOtlpProtobuf } from '../../src/otel/otlp-protobuf';

let db: TestDatabase;

/** Spans of a fake trace attributed to `runCaseId`, starting `startNs`. */
function spanRows(
  runCaseId: number,
  count: number,
  opts: { startNs?: bigint; attributes?: Record<string, unknown> } = {},
): SpanRow[] {
  const spans = sdkSpans(fakeTrace(count, { seed: runCaseId, ...opts }), {
    'service.name': 'repo-test',
    'benchmark.run_case_id': String(runCaseId),
  });
  return flattenSpans(decodeOtlpProtobuf('traces', encode.tracesProtobuf(spans)));
}

async function count(table: 'otel_traces' | 'otel_logs', runCaseId: number): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ${table} WHERE run_case_id = $1`,
    [runCaseId],
  );
  return rows[0]?.n ?? 0;
}

describe('otel repository (real Postgres)', () => {
  before(async () => {
    db = await createTestDatabase();
  });
  after(async () => {
    await db.drop();
  });

  test('spans are stored column for column', async () => {
    const rows = spanRows(101, 3);
    assert.equal(await insertSpans(db.pool, rows), 3);
    const { rows: stored } = await db.pool.query(
      `SELECT trace_id, span_id, parent_span_id, name, service_name, status, attributes, resource_attributes,
         scope_attributes, scope_name, scope_version, start_time, end_time, run_case_id, experiment_id, raw
       FROM otel_traces WHERE run_case_id = 101 ORDER BY id`,
    );
    assert.equal(stored.length, 3);
    const [first] = stored as Array<Record<string, unknown>>;
    const expected = rows[0] as SpanRow;
    assert.equal(first?.trace_id, expected.trace_id);
    assert.equal(first?.span_id, expected.span_id);
    assert.equal(first?.service_name, 'repo-test');
    assert.equal(first?.status, expected.status);
    assert.deepEqual(first?.attributes, expected.attributes);
    assert.deepEqual(first?.raw, expected.raw);
    assert.equal(first?.scope_name, 'fixture');
    assert.equal((first?.start_time as Date).toISOString(), `${expected.start_time?.slice(0, 23)}Z`);
    assert.equal(Number(first?.run_case_id), 101);
  });

  test("text with COPY's special characters is stored exactly", async () => {
    const tricky = 'tab\there\nnewline\r\\N backslash\\ "quote" ünï 😀';
    const rows = flattenSpans({
      spans: [
        {
          name: tricky,
          service_name: tricky,
          attributes: { k: tricky, [tricky]: 1 },
          run_case_id: 109,
          status: '\\N',
        },
      ],
    });
    await insertSpans(db.pool, rows);
    const { rows: stored } = await db.pool.query<{
      name: string;
      service_name: string;
      status: string;
      attributes: unknown;
    }>('SELECT name, service_name, status, attributes FROM otel_traces WHERE run_case_id = 109');
    assert.deepEqual(stored, [
      { name: tricky, service_name: tricky, status: '\\N', attributes: { k: tricky, [tricky]: 1 } },
    ]);
  });

  test('logs: body_json is JSON null, never SQL NULL, when the body is text or absent', async () => {
    const rows = flattenLogs({
      logs: [{ body: 'text', run_case_id: 102 }, { body: { k: 1 }, run_case_id: 102 }, { run_case_id: 102 }],
    });
    assert.equal(await insertLogs(db.pool, rows), 3);
    const { rows: stored } = await db.pool.query<{ text: string | null; kind: string | null }>(
      `SELECT body_text AS text, jsonb_typeof(body_json) AS kind FROM otel_logs WHERE run_case_id = 102 ORDER BY id`,
    );
    assert.deepEqual(stored, [
      { text: 'text', kind: 'null' },
      { text: null, kind: 'object' },
      { text: null, kind: 'null' },
    ]);
  });

  test('a multi-chunk request is stored whole or not at all', async () => {
    const rows = spanRows(103, COPY_CHUNK_ROWS + 10);
    const bad = { ...rows[rows.length - 1], start_time: 'not a timestamp' } as SpanRow;
    await assert.rejects(insertSpans(db.pool, [...rows.slice(0, -1), bad]));
    assert.equal(await count('otel_traces', 103), 0);
    assert.equal(await insertSpans(db.pool, rows), COPY_CHUNK_ROWS + 10);
    assert.equal(await count('otel_traces', 103), COPY_CHUNK_ROWS + 10);
  });

  test("a big span's jsonb is stored lz4-compressed; the pool's connections keep the server default", async () => {
    const rows = spanRows(110, 2, { attributes: { results: 'lz4 text '.repeat(400) } });
    await insertSpans(db.pool, rows);
    const { rows: stored } = await db.pool.query<{ method: string | null }>(
      'SELECT pg_column_compression(raw) AS method FROM otel_traces WHERE run_case_id = 110',
    );
    assert.deepEqual(
      stored.map((r) => r.method),
      ['lz4', 'lz4'],
    );
    // Every idle connection of the shared pool, not only the one the COPY happened to use.
    const clients = await Promise.all(Array.from({ length: 3 }, () => db.pool.connect()));
    try {
      for (const client of clients) {
        const { rows: setting } = await client.query<{ current: string; reset: string }>(
          `SELECT current_setting('default_toast_compression') AS current, reset_val AS reset
           FROM pg_settings WHERE name = 'default_toast_compression'`,
        );
        assert.equal(setting[0]?.current, setting[0]?.reset);
      }
    } finally {
      for (const client of clients) client.release();
    }
  });

  test('queryCaseTelemetry: spans when the case has no logs, with usage summed from gen_ai attributes', async () => {
    const rows = spanRows(104, 4, {
      attributes: { 'gen_ai.usage.input_tokens': 10, 'gen_ai.usage.output_tokens': '3' },
    });
    await insertSpans(db.pool, rows);
    await insertSpans(db.pool, spanRows(1104, 2)); // another case
    const telemetry = await queryCaseTelemetry(db.pool, 104, Date.now());
    assert.equal(telemetry.source, 'spans');
    assert.equal(telemetry.steps.length, 4);
    assert.deepEqual(
      telemetry.steps.map((s) => ('span_id' in s ? s.span_id : null)),
      rows.map((r) => r.span_id),
    );
    assert.deepEqual(telemetry.usage, { inputTokens: 40, outputTokens: 12 });
  });

  test('queryCaseTelemetry: logs win when they map to steps; usage still comes from spans', async () => {
    await insertSpans(db.pool, spanRows(105, 2, { attributes: { 'gen_ai.usage.prompt_tokens': 7 } }));
    await insertLogs(
      db.pool,
      flattenLogs({ logs: [{ body: 'one', run_case_id: 105, severity_text: 'INFO' }] }),
    );
    const telemetry = await queryCaseTelemetry(db.pool, 105, Date.now());
    assert.equal(telemetry.source, 'logs');
    assert.equal(telemetry.steps.length, 1);
    assert.deepEqual(telemetry.usage, { inputTokens: 14, outputTokens: 0 });
  });

  test('queryCaseTelemetry: nothing → source none, no usage; deleted and out-of-window rows are ignored', async () => {
    assert.deepEqual(await queryCaseTelemetry(db.pool, 106, Date.now()), {
      steps: [],
      source: 'none',
      usage: null,
    });

    const oldStart = BigInt(Date.now() - 60 * 60_000) * 1_000_000n;
    await insertSpans(db.pool, spanRows(107, 2, { startNs: oldStart }));
    await db.pool.query(
      `UPDATE otel_traces SET created_at = now() - interval '1 hour' WHERE run_case_id = 107`,
    );
    await insertSpans(db.pool, spanRows(107, 1));
    await db.pool.query(
      `UPDATE otel_traces SET is_deleted = true WHERE run_case_id = 107 AND start_time > now() - interval '10 minutes'`,
    );
    const telemetry = await queryCaseTelemetry(db.pool, 107, Date.now());
    assert.deepEqual(telemetry, { steps: [], source: 'none', usage: null });
    // The window is around the given "now": an hour ago, the old spans are in it.
    const then = await queryCaseTelemetry(db.pool, 107, Date.now() - 60 * 60_000);
    assert.equal(then.steps.length, 2);
  });

  test(`queryCaseTelemetry maps at most ${SPAN_QUERY_LIMIT} spans, the earliest`, async () => {
    const rows = spanRows(108, SPAN_QUERY_LIMIT + 50);
    await insertSpans(db.pool, rows);
    const telemetry = await queryCaseTelemetry(db.pool, 108, Date.now());
    assert.equal(telemetry.steps.length, SPAN_QUERY_LIMIT);
    assert.equal(telemetry.steps[0]?.step, 1);
  });
});
