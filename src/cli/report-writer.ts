import { rename, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import type { Config } from '../config';
import { temporalUiLink } from '../temporal/connection';
import { loadExperimentReport } from '../report/experiment-report-data';
import { renderExperimentReport } from '../report/experiment-report-html';
import { CliError } from './process-context';
import { errorText } from '../domain/errors';

/** `--out -` means standard output. */
export const STDOUT = '-';

function defaultReportPath(experimentId: number): string {
  return `agentbench-report-${experimentId}.html`;
}

/**
 * Loads, renders and writes the HTML report of an experiment. Returns the absolute path written, or
 * `-` for standard output. A file is written under a temporary name and renamed, so a reader never
 * sees half a report.
 */
export async function writeExperimentReport(
  pool: pg.Pool,
  config: Config,
  experimentId: number,
  out: string = defaultReportPath(experimentId),
): Promise<string> {
  const report = await loadExperimentReport(pool, experimentId);
  if (!report) throw new CliError(`experiment ${experimentId} not found`);
  const html = renderExperimentReport(report, { workflowUrl: (id) => temporalUiLink(config, id) });
  if (out === STDOUT) {
    await new Promise<void>((resolve, reject) =>
      process.stdout.write(html, (err) => (err ? reject(err) : resolve())),
    );
    return STDOUT;
  }
  const file = path.resolve(out);
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    await writeFile(tmp, html, { encoding: 'utf8', mode: 0o644 });
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw new CliError(`cannot write the report to ${file}: ${errorText(err)}`);
  }
  return file;
}
