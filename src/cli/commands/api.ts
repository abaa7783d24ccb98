import { postgresCheck, temporalCheck } from '../../metrics/dependency-checks';
import { ApiMetrics } from '../../metrics/orchestrator-metrics';
import { Readiness } from '../../metrics/readiness';
import { buildApiServer } from '../../api/api-server';
import { pruneIdempotencyKeys } from '../../db/idempotency-repository';
import { startResultEventRelay } from '../../result-events/relay-from-config';
import { connectTemporalClient } from '../../temporal/connection';
import { CliError, loadConfigOrExit, openDatabase, processLogger, stopSignal } from '../process-context';

const IDEMPOTENCY_KEY_DAYS = 7;
const PROBE_TIMEOUT_MS = 3_000;
const PRUNE_EVERY_MS = 60 * 60_000;

/**
 * `benchctl api`: the HTTP API (src/api) on API_HOST:API_PORT until SIGINT/SIGTERM, and a result
 * event relay. Needs Postgres and Temporal; RabbitMQ only for the relay.
 */
export async function apiCommand(): Promise<void> {
  const config = loadConfigOrExit();
  const log = processLogger(config, 'api');
  if (config.api.tokens.length === 0 && config.api.readTokens.length === 0 && !config.api.allowAnonymous) {
    throw new CliError(
      'E_API_NO_TOKENS: set API_TOKENS (name:secret,…) — or API_ALLOW_ANONYMOUS=true with a loopback API_HOST for local development',
      2,
    );
  }
  const pool = await openDatabase(config, log);
  const client = await connectTemporalClient(config).catch(async (err: unknown) => {
    await pool.end();
    throw new CliError(`Temporal does not answer at ${config.temporal.address}: ${String(err)}`);
  });
  const metrics = new ApiMetrics();
  const readiness = new Readiness(PROBE_TIMEOUT_MS);
  readiness.serve({
    temporal: temporalCheck(client.connection, PROBE_TIMEOUT_MS),
    postgres: postgresCheck(pool),
  });
  const app = await buildApiServer({ config, log, pool, client, metrics, readiness });
  try {
    await app.listen({ host: config.api.host, port: config.api.port });
  } catch (err) {
    await pool.end();
    await client.connection.close();
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new CliError(
        `E_API_PORT_IN_USE: API_PORT=${config.api.port} on ${config.api.host} is already in use`,
      );
    }
    throw err;
  }
  const relay = startResultEventRelay(config, pool, log, metrics.registry);
  const prune = () =>
    pruneIdempotencyKeys(pool, IDEMPOTENCY_KEY_DAYS).catch((err: unknown) =>
      log.warn({ code: 'E_API_IDEMPOTENCY_PRUNE', err }, 'pruning old idempotency keys failed'),
    );
  void prune();
  const pruner = setInterval(() => void prune(), PRUNE_EVERY_MS);
  log.info(
    {
      code: 'API_STARTED',
      host: config.api.host,
      port: config.api.port,
      anonymous: config.api.allowAnonymous,
    },
    `API listening on http://${config.api.host}:${config.api.port} (docs: /docs, OpenAPI: /openapi.json)`,
  );
  const signal = await stopSignal();
  readiness.markStopping();
  log.info({ code: 'API_STOPPING', signal }, 'API stopping');
  clearInterval(pruner);
  await app.close();
  await relay?.stop();
  await client.connection.close();
  await pool.end();
}
