import { availableParallelism } from 'node:os';
import path from 'node:path';
import { Piscina } from 'piscina';
import { decodeOtlpBody, type OtlpBodyRequest, type OtlpBodyResult } from './otlp-body';

/**
 * Where ingest bodies are decoded. JSON.parse, validation and flattening of a full-size body take
 * a second of CPU (bench: 1.2 s for 16 MB of spans on a loaded 2-core host) and several times its
 * size in memory; on the worker's event loop that stalls heartbeats, gateways and every other
 * case. Bodies above `inlineBytes` therefore go to a small pool of worker threads, each with a
 * heap cap: a body that needs more is refused (413) and only that thread is replaced.
 */

/**
 * Decode threads: at least two. Decoding and encoding a request is about as much CPU as Postgres
 * storing it, so one thread capped ingest at one core's worth of decoding — on a loaded host at
 * one thread's share of it (bench/otel-ingest: requests queued behind each other, p99 > 500 ms).
 * Each thread's heap is capped, and the collector's concurrency limits bound the work in flight.
 */
export const DECODE_THREADS = Math.max(2, Math.min(4, availableParallelism()));

/** Below this a body decodes in well under a millisecond: not worth a thread hop. */
const INLINE_DECODE_BYTES = 64 * 1024;
/** Heap of one decode thread; a 16 MB body of real spans needs about 200 MB. */
const DECODE_WORKER_HEAP_MB = 384;
/**
 * Young generation of one decode thread: 192 MB = 64 MB semi-spaces (V8 sizes it 3 semi-spaces).
 * A 1000-span request allocates megabytes of short-lived objects and strings (protobuf message,
 * rows, COPY text); with the default 16 MB semi-space most of it survives a scavenge or two and is
 * copied. Measured in a thread on this 2-core host (decode+flatten+encode of 1000 spans, 4 A/B
 * runs): 62 ms default → 42 ms. Committed only as it is used; not counted against the old-space cap.
 */
const DECODE_WORKER_YOUNG_MB = 192;

export class OtlpDecodePool {
  private readonly pool: Piscina;

  constructor(
    private readonly inlineBytes = INLINE_DECODE_BYTES,
    threads = DECODE_THREADS,
  ) {
    this.pool = new Piscina({
      filename: path.join(__dirname, 'otlp-decode-worker.js'),
      minThreads: 0,
      maxThreads: threads,
      idleTimeout: 30_000,
      resourceLimits: {
        maxOldGenerationSizeMb: DECODE_WORKER_HEAP_MB,
        maxYoungGenerationSizeMb: DECODE_WORKER_YOUNG_MB,
      },
      // Worker threads must not count toward the process's open handles at shutdown.
      atomics: 'disabled',
    });
  }

  async decode(req: OtlpBodyRequest): Promise<OtlpBodyResult> {
    // By the size it will have: a small gzip body can expand to maxBodyBytes, never on the main loop.
    if (!req.gzip && req.body.byteLength <= this.inlineBytes) return decodeOtlpBody(req);
    const own = req.body.byteOffset === 0 && req.body.byteLength === req.body.buffer.byteLength;
    const body = own ? req.body : new Uint8Array(req.body);
    try {
      return (await this.pool.run(
        { ...req, body },
        { transferList: [body.buffer as ArrayBuffer] },
      )) as OtlpBodyResult;
    } catch (err) {
      if ((err as { code?: string }).code === 'ERR_WORKER_OUT_OF_MEMORY')
        return { ok: false, status: 413, reason: 'body too large to decode within the collector memory cap' };
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }
}
