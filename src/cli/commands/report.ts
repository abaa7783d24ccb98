import { z } from 'zod';
import { CliError, loadConfigOrExit, openDatabase, processLogger } from '../process-context';
import { STDOUT, writeExperimentReport } from '../report-writer';

const experimentIdArg = z
  .string()
  .regex(/^\d+$/)
  .transform(Number)
  .pipe(z.number().int().positive().max(Number.MAX_SAFE_INTEGER));

const reportOptions = z.object({ out: z.string().min(1).optional() });

/**
 * `benchctl report <experimentId> [--out file]`: a self-contained HTML report of the experiment
 * (header, status counts, score summary, runs with Temporal UI links, every latest case).
 */
export async function reportCommand(experimentId: string, rawOpts: { out?: string }): Promise<void> {
  const id = experimentIdArg.safeParse(experimentId);
  if (!id.success)
    throw new CliError(`experimentId must be a positive integer, got ${JSON.stringify(experimentId)}`, 2);
  const opts = reportOptions.safeParse(rawOpts);
  if (!opts.success) throw new CliError('--out needs a file name (or - for standard output)', 2);

  const config = loadConfigOrExit();
  const log = processLogger(
    { ...config, logLevel: config.logLevel === 'info' ? 'warn' : config.logLevel },
    'report',
  );
  const pool = await openDatabase(config, log, { localDefault: true });
  try {
    const written = await writeExperimentReport(pool, config, id.data, opts.data.out);
    if (written !== STDOUT) process.stdout.write(`report: ${written}\n`);
  } finally {
    await pool.end();
  }
}
