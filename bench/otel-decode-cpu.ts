/**
 * In-process CPU of the collector's decode path per 1000 spans: the otel-ingest bench's protobuf
 * body of 1000 spans through decodeOtlpBody (decode, flatten, attribution, COPY text) `--iterations`
 * times in this thread, no Postgres, no HTTP. Run under `node --cpu-prof` to see where it goes.
 *
 * usage: node --import tsx bench/otel-decode-cpu.ts [--iterations 300] [--format protobuf|json]
 */
import { parseArgs } from 'node:util';
import { decodeOtlpBody } from '../src/otel/otlp-body';
import { encode } from '../test/support/otel-fixtures';
import { benchSpans } from './support/otel-bench-spans';

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      iterations: { type: 'string', default: '300' },
      format: { type: 'string', default: 'protobuf' },
    },
  });
  const iterations = Number(args.iterations);
  const format = args.format === 'json' ? 'json' : 'protobuf';
  const bodies = Array.from({ length: 4 }, (_, v) => {
    const spans = benchSpans(1000, 10 + v);
    return format === 'protobuf' ? encode.tracesProtobuf(spans) : encode.tracesJson(spans);
  });
  const run = async (i: number) => {
    const result = await decodeOtlpBody({
      signal: 'traces',
      body: bodies[i % bodies.length] as Uint8Array,
      format,
      gzip: false,
      shapeChecked: false,
      maxBodyBytes: 64 * 1024 * 1024,
      extras: {},
      attribution: { runCaseId: 7, experimentId: 1, dataItemId: 1 },
    });
    if (!result.ok || result.records !== 1000) throw new Error(`decode failed: ${JSON.stringify(result)}`);
  };
  for (let i = 0; i < 30; i++) await run(i);
  const before = process.cpuUsage();
  const startedAt = performance.now();
  for (let i = 0; i < iterations; i++) await run(i);
  const cpu = process.cpuUsage(before);
  const wallMs = performance.now() - startedAt;
  console.log(
    `${format} 1000 spans x ${iterations}: ${((cpu.user + cpu.system) / 1000 / iterations).toFixed(2)} cpu ms ` +
      `(${(wallMs / iterations).toFixed(2)} wall ms) per 1000 spans, ${((bodies[0]?.byteLength ?? 0) / 1024) | 0} KiB/body`,
  );
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
