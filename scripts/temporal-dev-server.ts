/**
 * scripts/setup's Temporal step: `node --import tsx scripts/temporal-dev-server.ts`. Starts the dev
 * server exactly as `benchctl run` does when none answers (src/temporal/dev-server.ts holds the
 * command line), and registers missing search attributes on whatever answers.
 * Exit 0: ready. Exit 3: no `temporal` binary (setup then builds it with go install and re-runs
 * this). Exit 1/2: anything else, said on stderr.
 */
import { ConfigError, loadConfig } from '../src/config';
import { ensureTemporalDevServer } from '../src/temporal/dev-server';
import { DevServerError } from '../src/temporal/errors';
import { errorStackText, errorText } from '../src/domain/errors';

const say = (line: string) => process.stdout.write(`[setup] ${line}\n`);

async function main(): Promise<number> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`[setup] ERROR: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  try {
    const outcome = await ensureTemporalDevServer({
      address: config.temporal.address,
      namespace: config.temporal.namespace,
      stateDir: config.stateDir,
      timeoutMs: 90_000,
      say,
    });
    if (outcome.started) say(`temporal is up (pid ${outcome.started.pid})`);
    return 0;
  } catch (err) {
    if (err instanceof DevServerError && err.reason === 'no-binary') return 3;
    process.stderr.write(`[setup] ERROR: ${errorText(err)}\n`);
    return 1;
  }
}

main().then(
  // The detached server must not keep this script alive, nor must gRPC's idle channels.
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`[setup] ERROR: ${errorStackText(err)}\n`);
    process.exit(1);
  },
);
