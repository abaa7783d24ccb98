import { fakeTrace, sdkSpans } from '../../test/support/otel-fixtures';

/**
 * The OTel benches' agent spans: a handful of attributes, one of them a few hundred characters
 * (bench/otel-ingest sends them, bench/otel-decode-cpu decodes them in-process).
 */
export function benchSpans(count: number, seed: number) {
  return sdkSpans(
    fakeTrace(count, {
      seed,
      attributes: {
        results: `result text ${seed} `.repeat(20),
        model: 'bench-model',
        'http.method': 'POST',
        'gen_ai.usage.input_tokens': 123,
      },
    }),
    { 'service.name': 'bench-agent', 'benchmark.run_case_id': '1', 'benchmark.experiment_id': '1' },
  );
}
