import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { attributeToCase } from '../domain/otlp-attributes';
import { sanitizeDocument } from '../domain/otlp-document';
import { flattenLogs, flattenSpans } from '../domain/otlp-flatten';
import {
  MAX_DOCUMENT_DEPTH,
  OtlpPayloadError,
  type CaseAttribution,
  type LogRow,
  type OtelSignal,
  type SpanRow,
} from '../domain/otlp-rows';
import { JsonShapeError, JsonShapeGuard } from './json-shape-guard';
import { logCopyText, spanCopyText } from './otel-copy-text';
import { decodeOtlpProtobuf } from './otlp-protobuf';

/**
 * One ingest body → its rows as COPY text: gunzip (bounded), the JSON shape guard, JSON.parse or
 * protobuf, flattening, attribution to the request's case and encoding. Pure of I/O, so it runs either inline (small
 * bodies) or in the decode worker pool (otlp-decode-pool), where a big or hostile body costs the
 * worker's event loop nothing.
 */

/** Objects and arrays one JSON body may hold: a full-size (16 MB) body of real spans has ~700 000. */
export const MAX_DOCUMENT_CONTAINERS = 1_000_000;

export type OtlpBodyFormat = 'json' | 'protobuf';

export interface OtlpBodyRequest {
  signal: OtelSignal;
  body: Uint8Array;
  format: OtlpBodyFormat;
  gzip: boolean;
  /** The JSON shape guard already saw these bytes while they were read (identity JSON). */
  shapeChecked: boolean;
  maxBodyBytes: number;
  /** x-benchmark-* header correlation (CONTRACT §4.2). */
  extras: Record<string, string>;
  /** The authenticated case; null = rows keep what they claim (untokened ingest allowed). */
  attribution: CaseAttribution | null;
}

/** A body's rows, already COPY text (otel-copy-text): bytes cross the thread boundary, not objects. */
export interface OtlpEncodedRows {
  ok: true;
  signal: OtelSignal;
  records: number;
  copyText: Uint8Array;
  /** The first run case a row claims (for refusing unattributed claims); null when none does. */
  claimedRunCaseId: number | null;
}

export type OtlpBodyResult = OtlpEncodedRows | { ok: false; status: number; reason: string };

const gunzip = promisify(zlib.gunzip);

function refused(status: number, reason: string): OtlpBodyResult {
  return { ok: false, status, reason };
}

function encoded<T extends SpanRow | LogRow>(
  signal: OtelSignal,
  rows: readonly T[],
  encode: (rows: readonly T[]) => Buffer,
): OtlpEncodedRows {
  return {
    ok: true,
    signal,
    records: rows.length,
    copyText: encode(rows),
    claimedRunCaseId: rows.find((row) => row.run_case_id !== null)?.run_case_id ?? null,
  };
}

export async function decodeOtlpBody(req: OtlpBodyRequest): Promise<OtlpBodyResult> {
  let body = Buffer.from(req.body.buffer, req.body.byteOffset, req.body.byteLength);
  if (body.length > req.maxBodyBytes) return refused(413, `body exceeds ${req.maxBodyBytes} bytes`);
  if (req.gzip) {
    try {
      body = await gunzip(body, { maxOutputLength: req.maxBodyBytes });
    } catch (err) {
      if (err instanceof RangeError)
        return refused(413, `decompressed body exceeds ${req.maxBodyBytes} bytes`);
      return refused(400, `invalid gzip body: ${(err as Error).message}`);
    }
  }
  try {
    let document: unknown;
    if (req.format === 'protobuf') {
      document = decodeOtlpProtobuf(req.signal, body);
    } else {
      if (!req.shapeChecked || req.gzip) {
        const guard = new JsonShapeGuard(MAX_DOCUMENT_DEPTH, MAX_DOCUMENT_CONTAINERS);
        guard.write(body);
        guard.end();
      }
      const text = body.toString('utf8').replace(/^\ufeff/, '');
      if (text.trim() === '') {
        document = {};
      } else {
        try {
          document = JSON.parse(text);
        } catch (err) {
          return refused(400, `body is not valid JSON: ${(err as Error).message}`);
        }
        document = sanitizeDocument(document);
      }
    }
    if (req.signal === 'traces') {
      const rows = flattenSpans(document, req.extras);
      return encoded('traces', req.attribution ? attributeToCase(rows, req.attribution) : rows, spanCopyText);
    }
    const rows = flattenLogs(document, req.extras);
    return encoded('logs', req.attribution ? attributeToCase(rows, req.attribution) : rows, logCopyText);
  } catch (err) {
    if (err instanceof OtlpPayloadError || err instanceof JsonShapeError) return refused(400, err.message);
    // protobufjs recursing through a hostile nesting, before our own depth check sees it.
    if (err instanceof RangeError) return refused(400, `undecodable body: ${err.message}`);
    throw err;
  }
}
