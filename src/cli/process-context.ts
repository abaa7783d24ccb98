import type pg from 'pg';
import { ConfigError, loadConfig, requireDatabaseUrl, type Config } from '../config';
import { createLogger, type Logger } from '../logger';
import { createPool } from '../db/pool';
import { migrate } from '../db/migrate';
import { errorText } from '../domain/errors';

/** Default database of the local setup (scripts/setup creates it), used by `benchctl run` only. */
export const LOCAL_DATABASE_URL = 'postgres://agentbench:agentbench@127.0.0.1:5432/agentbench';

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

export function loadConfigOrExit(): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(err.message, 2);
    throw err;
  }
}

export function processLogger(config: Config, name: string): Logger {
  return createLogger({ level: config.logLevel, name });
}

/** A pool on the configured database with our migrations applied (they never alter platform tables). */
export async function openDatabase(
  config: Config,
  log: Logger,
  opts: { localDefault?: boolean } = {},
): Promise<pg.Pool> {
  let url: string;
  try {
    url = requireDatabaseUrl(config);
  } catch (err) {
    if (!opts.localDefault || !(err instanceof ConfigError) || config.database.engine !== 'postgres') {
      throw new CliError(errorText(err), 2);
    }
    url = LOCAL_DATABASE_URL;
  }
  const pool = createPool(url, config.database.poolMax, log);
  try {
    await migrate(pool);
  } catch (err) {
    await pool.end();
    throw new CliError(`cannot prepare the database: ${errorText(err)}`);
  }
  return pool;
}

/** Resolves when the process is asked to stop (SIGINT/SIGTERM). */
export function stopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
}
