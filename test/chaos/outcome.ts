import { LABELS } from '../../src/docker/labels';
import { isTerminalStatus } from '../../src/domain/case-status';
import type { Execution } from '../support/hit-counter';
import type { ScenarioStack } from './scenario-stack';

/** A window in which the scenario's fault was in force (from the fault's start to its repair). */
export interface FaultWindow {
  from: number;
  to: number;
}

/** One row of the chaos table. */
export interface ScenarioOutcome {
  scenario: string;
  terminal: number;
  total: number;
  /** Rows that ended `success` (not a column: scenarios whose fault no case should notice require all). */
  succeeded: number;
  /** Cases whose agent ran again after an execution in flight during the fault (the fault cut it). */
  rerunAfterFault: number;
  /** Cases whose agent ran more than once otherwise: a promise broken. */
  ranTwice: number;
  /** Cases whose agent finished but whose row does not hold that output as `success`. */
  resultsLost: number;
  containersLeaked: number;
  /** run_cases still pending/queued/running/trajectory/scoring, plus experiments left `consuming`. */
  rowsActive: number;
  messagesLost: number;
  messagesDuplicated: number;
  /** Whether every run ended (workflow closed, rows terminal) before the scenario's deadline. */
  ended: boolean;
  /** What else broke (each one fails the scenario) and what is worth knowing. */
  violations: string[];
  notes: string[];
  seconds: number;
  pass: boolean;
}

export type MeasuredOutcome = Omit<ScenarioOutcome, 'scenario' | 'seconds' | 'pass'>;

function inFlightDuring(e: Execution, faults: FaultWindow[], measuredAt: number): boolean {
  const end = e.doneAt ?? measuredAt;
  return faults.some((f) => e.startedAt <= f.to && end >= f.from);
}

/**
 * Measures the runs of a scenario from outside the worker: executions from the hit counter, rows
 * from Postgres, containers from the (private) Docker daemon. `faults` are the windows in which an
 * execution may legitimately have been cut; `faultKillsContainers` says whether the fault itself
 * can kill a container (worker kill -9, dockerd restart), which is what makes a re-run acceptable.
 */
export async function measureRuns(
  stack: ScenarioStack,
  opts: { faults: FaultWindow[]; faultKillsContainers: boolean; ended: boolean },
): Promise<MeasuredOutcome> {
  const now = Date.now();
  const violations: string[] = [];
  const notes: string[] = [];
  const caseIds = stack.runs.flatMap((r) => r.seeded.runCaseIds);
  const { rows } = await stack.db.pool.query<{
    id: string;
    status: string;
    output: string | null;
    error: string | null;
  }>(
    `SELECT id::text, status, agent_output::text AS output, error_message AS error
       FROM run_cases WHERE id = ANY($1::bigint[])`,
    [caseIds],
  );
  const byId = new Map(rows.map((r) => [r.id, r]));
  let terminal = 0;
  let succeeded = 0;
  let rowsActive = 0;
  let rerunAfterFault = 0;
  let ranTwice = 0;
  let resultsLost = 0;
  const errors = new Map<string, number>();
  const twice: string[] = [];
  for (const id of caseIds.map(String)) {
    const row = byId.get(id);
    if (row && isTerminalStatus(row.status)) terminal += 1;
    else rowsActive += 1;
    if (row?.status === 'success') succeeded += 1;
    if (row && row.status !== 'success') {
      const key = `${row.status}: ${(row.error ?? '').slice(0, 80)}`;
      errors.set(key, (errors.get(key) ?? 0) + 1);
    }
    const executions = stack.services.counter.executions.get(id) ?? [];
    const finished = executions.filter((e) => e.doneAt !== null);
    if (
      finished.length > 0 &&
      !(row?.status === 'success' && finished.some((e) => row.output?.includes(e.nonce)))
    )
      resultsLost += 1;
    if (executions.length > 1) {
      // Excused only when every execution but the last was in flight when the fault hit (its
      // container killed, or the worker holding it killed: the retry then starts the agent anew).
      const sorted = [...executions].sort((a, b) => a.startedAt - b.startedAt);
      const excused =
        opts.faultKillsContainers &&
        sorted.slice(0, -1).every((e) => e.doneAt === null && inFlightDuring(e, opts.faults, now));
      if (excused) rerunAfterFault += 1;
      else {
        ranTwice += 1;
        twice.push(
          `${id} (${executions.length} runs, ${finished.length} finished, row ${row?.status ?? 'missing'})`,
        );
      }
    }
  }
  const experimentIds = stack.runs.map((r) => r.seeded.experimentId);
  const { rows: consuming } = await stack.db.pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM experiments WHERE id = ANY($1::bigint[]) AND queue_status = 'consuming'`,
    [experimentIds],
  );
  const experimentsConsuming = consuming[0]?.n ?? 0;
  if (experimentsConsuming > 0) notes.push(`${experimentsConsuming} experiment(s) left consuming`);
  const containersLeaked = await leakedContainers(stack);
  for (const [error, n] of errors) notes.push(`${n}× ${error}`);
  if (twice.length > 0)
    notes.push(`ran more than once: ${twice.slice(0, 4).join(', ')}${twice.length > 4 ? ', …' : ''}`);
  if (!opts.ended) violations.push('runs did not end before the deadline');
  return {
    terminal,
    total: caseIds.length,
    succeeded,
    rerunAfterFault,
    ranTwice,
    resultsLost,
    containersLeaked,
    rowsActive: rowsActive + experimentsConsuming,
    messagesLost: 0,
    messagesDuplicated: 0,
    ended: opts.ended,
    violations,
    notes,
  };
}

/** Our containers (by label) of this scenario's runs still on the daemon, after a short grace for removals in flight. */
export async function leakedContainers(stack: ScenarioStack, graceMs = 15_000): Promise<number> {
  const workflowIds = new Set(stack.runs.map((r) => r.workflowId));
  const deadline = Date.now() + graceMs;
  for (;;) {
    const all = await stack.docker
      .listContainers({ all: true, filters: { label: [`${LABELS.managed}=true`] } })
      .catch(() => null);
    const ours = all?.filter((c) => workflowIds.has(c.Labels[LABELS.workflowId] ?? '')).length ?? 0;
    if ((all !== null && ours === 0) || Date.now() > deadline) return all === null ? -1 : ours;
    await new Promise((r) => setTimeout(r, 500));
  }
}

export function passes(o: MeasuredOutcome): boolean {
  return (
    o.ended &&
    o.terminal === o.total &&
    o.ranTwice === 0 &&
    o.resultsLost === 0 &&
    o.containersLeaked === 0 &&
    o.rowsActive === 0 &&
    o.messagesLost === 0 &&
    o.messagesDuplicated === 0 &&
    o.violations.length === 0
  );
}
