/**
 * Cost of the logger's pattern-based redaction (src/logger.ts) per log line, against a baseline
 * measured in the same run: pino with the fixed-path redaction the logger had before (fast-redact
 * over a dozen paths). Both write to an in-memory sink. Lines are the kinds the worker writes: a
 * small case event, a child logger's line, and a line with a nested object (a scorer, headers, a
 * URL) of the size a careless `{ scorer }` would log.
 *
 * usage: node --import tsx bench/logger-redaction.ts [--lines 50000] [--rounds 5]
 * Prints ns/line of each and the ratio pattern/baseline per kind (median of the rounds).
 */
import { parseArgs } from 'node:util';
import pino from 'pino';
import { createLogger, type Logger } from '../src/logger';

const { values } = parseArgs({
  options: { lines: { type: 'string', default: '50000' }, rounds: { type: 'string', default: '5' } },
});
const LINES = Number(values.lines);
const ROUNDS = Number(values.rounds);

/** What src/logger.ts redacted before pattern-based redaction. */
const FIXED_PATHS = [
  'api_key',
  '*.api_key',
  '*.*.api_key',
  '*.*.*.api_key',
  'password',
  '*.password',
  '*.*.password',
  'authorization',
  '*.authorization',
  '*.headers.authorization',
  '*.headers["x-api-key"]',
];

let bytes = 0;
const sink = {
  write(chunk: string) {
    bytes += chunk.length;
  },
};

function baselineLogger(): Logger {
  return pino(
    {
      level: 'info',
      name: 'agentbench',
      base: { pid: process.pid },
      redact: { paths: FIXED_PATHS, censor: '[REDACTED]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    sink,
  );
}

const scorer = {
  id: 3,
  scorer_key: 'task_success',
  name: 'Task success',
  scorer_config: {
    prompt_template: 'Input: {{data_item.input}}\nOutput: {{run.output}}\nTrajectory: {{run.trajectory}}',
    base_url: 'https://llm.example.com/v1/chat/completions',
    model_name: 'judge-model',
    api_style: 'openai',
    api_key: 'sk-bench',
  },
};

const KINDS: Record<string, (log: Logger, i: number) => void> = {
  'case event': (log, i) =>
    log.info(
      { code: 'CASE_COMPLETED', run_case_id: i, latency_ms: 812, case_exec_ms: 640, otel_query_ms: 12 },
      'case completed',
    ),
  'child line': (log, i) => log.child({ workflow_id: 'experiment-42-m', run_case_id: i }).info('scoring'),
  'nested object': (log, i) =>
    log.warn(
      {
        code: 'E_EVALUATOR_CALL_FAILED',
        run_case_id: i,
        scorer,
        request: {
          url: 'https://llm.example.com/v1/chat?q=1',
          headers: { 'content-type': 'application/json' },
        },
        error: 'HTTP 503 from https://llm.example.com/v1/chat/completions',
      },
      'evaluator call failed, retrying',
    ),
};

function nsPerLine(log: Logger, line: (log: Logger, i: number) => void): number {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < LINES; i++) line(log, i);
  return Number(process.hrtime.bigint() - t0) / LINES;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

const baseline = baselineLogger();
const patterned = createLogger({ level: 'info', destination: sink });
console.log(`lines per round: ${LINES}, rounds: ${ROUNDS}`);
for (const [kind, line] of Object.entries(KINDS)) {
  nsPerLine(baseline, line); // warm-up of both
  nsPerLine(patterned, line);
  const base: number[] = [];
  const pattern: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    // Alternate which goes first so neither always runs on a warmer heap.
    if (r % 2 === 0) {
      base.push(nsPerLine(baseline, line));
      pattern.push(nsPerLine(patterned, line));
    } else {
      pattern.push(nsPerLine(patterned, line));
      base.push(nsPerLine(baseline, line));
    }
  }
  const b = median(base);
  const p = median(pattern);
  console.log(
    `${kind.padEnd(14)} baseline ${b.toFixed(0).padStart(6)} ns/line  pattern ${p.toFixed(0).padStart(6)} ns/line  ratio ${(p / b).toFixed(2)}`,
  );
}
console.log(`(${bytes} bytes written)`);
