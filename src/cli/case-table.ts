import Table from 'cli-table3';
import type pg from 'pg';

const OUTPUT_WIDTH = 40;
const ERROR_WIDTH = 50;

function cell(value: unknown, width: number): string {
  const text =
    value === null || value === undefined ? '' : typeof value === 'string' ? value : JSON.stringify(value);
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > width ? `${flat.slice(0, width - 1)}…` : flat;
}

interface CaseRow {
  id: number;
  data_item_id: number;
  attempt_no: number;
  status: string;
  latency_ms: number | null;
  final_score: number | null;
  agent_output: unknown;
  error_message: string | null;
}

/** Colour codes only on a terminal (and not under NO_COLOR): piped output and CI logs stay plain text. */
export function tableStyle(): { head?: string[]; border?: string[] } {
  return process.stdout.isTTY && !process.env.NO_COLOR ? {} : { head: [], border: [] };
}

/** The latest attempts of an experiment, as the platform shows them. */
export async function latestCases(pool: pg.Pool, experimentId: number): Promise<CaseRow[]> {
  const { rows } = await pool.query<CaseRow>(
    `SELECT id, data_item_id, attempt_no, status, latency_ms, final_score, agent_output, error_message
       FROM run_cases WHERE experiment_id = $1 AND is_latest = TRUE ORDER BY id`,
    [experimentId],
  );
  return rows;
}

/** Per-case results of the latest attempts of an experiment, as the platform would show them. */
export async function printCaseTable(pool: pg.Pool, experimentId: number): Promise<void> {
  const rows = await latestCases(pool, experimentId);
  const table = new Table({
    head: ['case', 'item', 'attempt', 'status', 'latency', 'score', 'output', 'error'],
    style: tableStyle(),
  });
  for (const r of rows) {
    table.push([
      r.id,
      r.data_item_id,
      r.attempt_no,
      r.status,
      r.latency_ms === null ? '' : `${r.latency_ms} ms`,
      r.final_score ?? '',
      cell(r.agent_output, OUTPUT_WIDTH),
      cell(r.error_message, ERROR_WIDTH),
    ]);
  }
  process.stdout.write(`${table.toString()}\n`);
}
