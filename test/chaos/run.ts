/**
 * `npm run chaos [-- name-filter …] [--fast]`: issue 13's chaos suite. Starts private instances of
 * Postgres, Redis, RabbitMQ, the Temporal dev server and dockerd (never the shared ones), runs each
 * scenario against them with real `benchctl worker`/`bridge` processes, prints one table and exits
 * non-zero when a scenario fails.
 */
import { outcomeNotes, outcomeTable } from './outcome-table';
import type { ScenarioOutcome } from './outcome';
import { runOne, SCENARIOS } from './scenarios';
import { startChaosServices } from './services';

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const filters = args.filter((a) => !a.startsWith('--')).map((a) => a.toLowerCase());
  const selected = SCENARIOS.filter(
    (s) =>
      (!args.includes('--fast') || s.fast) &&
      (filters.length === 0 || filters.some((f) => s.name.toLowerCase().includes(f))),
  );
  if (selected.length === 0) {
    process.stderr.write(
      `no scenario matches; scenarios:\n${SCENARIOS.map((s) => `  ${s.name}`).join('\n')}\n`,
    );
    return 2;
  }
  const started = Date.now();
  process.stderr.write('chaos: starting private Postgres, Redis, RabbitMQ, Temporal and dockerd…\n');
  const services = await startChaosServices();
  // Ctrl-C must not leave private daemons (dockerd, Postgres, …) behind.
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.once(signal, () => {
      process.stderr.write(`chaos: ${signal}, stopping the private services\n`);
      void services.destroy().finally(() => process.exit(130));
    });
  const outcomes: ScenarioOutcome[] = [];
  try {
    for (const scenario of selected) {
      process.stderr.write(`chaos: ${scenario.name}…\n`);
      const o = await runOne(scenario, services);
      process.stderr.write(`chaos: ${scenario.name}: ${o.pass ? 'PASS' : 'FAIL'} in ${o.seconds} s\n`);
      outcomes.push(o);
    }
  } finally {
    await services.destroy();
  }
  process.stdout.write(`${outcomeTable(outcomes)}\n${outcomeNotes(outcomes)}\n`);
  const failed = outcomes.filter((o) => !o.pass).length;
  process.stdout.write(
    `${outcomes.length - failed} of ${outcomes.length} scenarios passed in ${Math.round((Date.now() - started) / 1000)} s\n`,
  );
  return failed > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`chaos: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(2);
  },
);
