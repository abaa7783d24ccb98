import Table from 'cli-table3';
import type { ScenarioOutcome } from './outcome';

/** The chaos suite's one table: a row per scenario, the columns of issue 13's acceptance. */
export function outcomeTable(outcomes: ScenarioOutcome[]): string {
  const table = new Table({
    head: [
      'scenario',
      'terminal/total',
      'ran >1× (fault-cut)',
      'results lost',
      'containers leaked',
      'rows active',
      'msgs lost/dup',
      's',
      'result',
    ],
    style: { head: [], border: [] },
  });
  for (const o of outcomes)
    table.push([
      o.scenario,
      `${o.terminal}/${o.total}`,
      `${o.ranTwice} (${o.rerunAfterFault})`,
      o.resultsLost,
      o.containersLeaked < 0 ? '?' : o.containersLeaked,
      o.rowsActive,
      `${o.messagesLost}/${o.messagesDuplicated}`,
      o.seconds,
      o.pass ? 'PASS' : 'FAIL',
    ]);
  return table.toString();
}

/** What each failing (or noteworthy) scenario saw, below the table. */
export function outcomeNotes(outcomes: ScenarioOutcome[]): string {
  return outcomes
    .filter((o) => o.violations.length > 0 || o.notes.length > 0)
    .map(
      (o) =>
        `${o.pass ? 'PASS' : 'FAIL'} ${o.scenario}\n${[...o.violations.map((v) => `  ✗ ${v}`), ...o.notes.map((n) => `  · ${n}`)].join('\n')}`,
    )
    .join('\n');
}
