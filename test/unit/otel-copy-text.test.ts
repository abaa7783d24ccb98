import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { SpanRow } from '../../src/domain/otlp-rows';
import { COPY_CHUNK_ROWS, SPAN_COLUMNS, spanCopyText } from '../../src/otel/otel-copy-text';

function row(i: number, shared: Record<string, unknown>): SpanRow {
  return {
    trace_id: 'ab'.repeat(16),
    span_id: 'cd'.repeat(8),
    parent_span_id: null,
    name: `step\t${i}\\ é😀\n`,
    service_name: 'svc',
    status: null,
    attributes: { i, text: 'x'.repeat(i * 7), path: 'C:\\tmp', uni: 'ü' },
    resource_attributes: shared,
    scope_attributes: {},
    scope_name: null,
    scope_version: '1.0',
    start_time: '2026-01-01T00:00:00.000000Z',
    end_time: null,
    run_case_id: i,
    experiment_id: null,
    raw: { n: i },
  };
}

/** COPY text format, spelled out: \N for NULL, backslash escapes, jsonb as JSON text. */
function reference(rows: SpanRow[]): string {
  const jsonb = new Set(['attributes', 'resource_attributes', 'scope_attributes', 'raw']);
  const escape = (s: string) =>
    s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\r/g, '\\r').replace(/\t/g, '\\t');
  return rows
    .map((r) =>
      SPAN_COLUMNS.map((c) => {
        const v = r[c];
        if (jsonb.has(c)) return escape(JSON.stringify(v));
        return v === null ? '\\N' : escape(String(v));
      }).join('\t'),
    )
    .map((line) => `${line}\n`)
    .join('');
}

describe('spanCopyText', () => {
  test('rows of growing size over several chunks are the COPY text format, byte for byte', () => {
    const shared = { 'service.name': 'svc' };
    const small = [row(0, shared)];
    assert.equal(spanCopyText(small).toString('utf8'), reference(small));
    // After a one-row request the buffer is sized for small rows: these outgrow it repeatedly.
    const rows = Array.from({ length: COPY_CHUNK_ROWS * 2 + 7 }, (_, i) => row(i, shared));
    const text = spanCopyText(rows);
    assert.equal(text.toString('utf8'), reference(rows));
    assert.equal(text.byteLength, Buffer.byteLength(reference(rows)));
    assert.equal(spanCopyText([]).byteLength, 0);
  });
});
