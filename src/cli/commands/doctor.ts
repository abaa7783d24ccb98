import amqp from 'amqplib';
import pg from 'pg';
import { Connection } from '@temporalio/client';
import { amqpUrl, requireDatabaseUrl, type Config } from '../../config';
import { createDockerClient, pingDocker } from '../../docker/docker-client';
import { createRedis } from '../../../bridge/redis-lock';
import { SA } from '../../domain/search-attributes';
import { LOCAL_DATABASE_URL, loadConfigOrExit } from '../process-context';
import { errorText } from '../../domain/errors';

interface Check {
  name: string;
  ok: boolean;
  detail: string;
  fix?: string;
}

const TIMEOUT_MS = 5000;

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  return Promise.race([
    p,
    new Promise<T>((_, reject) =>
      setTimeout(() => reject(new Error(`${what}: no answer in ${TIMEOUT_MS / 1000}s`)), TIMEOUT_MS).unref(),
    ),
  ]);
}

async function checkDocker(config: Config): Promise<Check> {
  const ok = await pingDocker(createDockerClient(config.docker.socketPath), TIMEOUT_MS);
  return ok
    ? { name: 'docker', ok, detail: config.docker.socketPath }
    : {
        name: 'docker',
        ok,
        detail: `no answer at ${config.docker.socketPath}`,
        fix: 'start dockerd (as root: npm run setup installs docker.io and starts it), or set DOCKER_SOCKET_PATH',
      };
}

async function checkTemporal(config: Config): Promise<Check> {
  try {
    const connection = await withTimeout(
      Connection.connect({ address: config.temporal.address, connectTimeout: TIMEOUT_MS }),
      'temporal',
    );
    try {
      const { customAttributes } = await connection.operatorService.listSearchAttributes({
        namespace: config.temporal.namespace,
      });
      const missing = Object.values(SA)
        .filter((k) => !(customAttributes ?? {})[k.name])
        .map((k) => `${k.name}=${k.type}`);
      if (missing.length > 0) {
        return {
          name: 'temporal',
          ok: false,
          detail: `${config.temporal.address} (namespace ${config.temporal.namespace}) lacks search attributes ${missing.join(', ')}`,
          fix: `npm run setup registers them on the local dev server; elsewhere: ${missing.map((m) => `temporal operator search-attribute create --name ${m.split('=')[0]} --type ${m.split('=')[1]}`).join('; ')}`,
        };
      }
      return {
        name: 'temporal',
        ok: true,
        detail: `${config.temporal.address}, namespace ${config.temporal.namespace}, search attributes registered`,
      };
    } finally {
      await connection.close();
    }
  } catch (err) {
    return {
      name: 'temporal',
      ok: false,
      detail: `${config.temporal.address}: ${errorText(err)}`,
      fix: 'npm run setup starts a local dev server; or set TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE',
    };
  }
}

async function checkPostgres(config: Config): Promise<Check> {
  let url: string;
  let note = '';
  try {
    url = requireDatabaseUrl(config);
  } catch {
    url = LOCAL_DATABASE_URL;
    note = ' (local default; the worker and bridge need DATABASE_URL or POSTGRES_*)';
  }
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: TIMEOUT_MS });
  const shown = new URL(url);
  shown.password = shown.password ? '***' : '';
  try {
    await client.connect();
    await client.query('SELECT 1');
    return { name: 'postgres', ok: true, detail: `${shown.toString()}${note}` };
  } catch (err) {
    return {
      name: 'postgres',
      ok: false,
      detail: `${shown.toString()}: ${errorText(err)}`,
      fix: 'npm run setup starts a local PostgreSQL; or set DATABASE_URL / POSTGRES_SERVER, POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB',
    };
  } finally {
    await client.end().catch(() => undefined);
  }
}

async function checkRedis(config: Config): Promise<Check> {
  if (!config.redis.host)
    return {
      name: 'redis',
      ok: false,
      detail: 'REDIS_HOST is not set (the bridge needs it)',
      fix: 'export REDIS_HOST=127.0.0.1',
    };
  const redis = createRedis(config.redis);
  try {
    // The client fails fast while disconnected (no offline queue), so wait for the connection first.
    await withTimeout(
      new Promise((resolve, reject) => redis.once('ready', resolve).once('error', reject)),
      'redis',
    );
    await withTimeout(redis.ping(), 'redis');
    return {
      name: 'redis',
      ok: true,
      detail: `${config.redis.host}:${config.redis.port} db ${config.redis.db}`,
    };
  } catch (err) {
    return {
      name: 'redis',
      ok: false,
      detail: `${config.redis.host}:${config.redis.port}: ${errorText(err)}`,
      fix: 'npm run setup starts a local Redis; or set REDIS_HOST / REDIS_PORT',
    };
  } finally {
    redis.disconnect();
  }
}

async function checkRabbitmq(config: Config): Promise<Check> {
  if (!config.rabbitmq.host || !config.rabbitmq.user || !config.rabbitmq.password) {
    return {
      name: 'rabbitmq',
      ok: false,
      detail: 'RABBITMQ_HOST/RABBITMQ_USER/RABBITMQ_PASSWORD not set (the bridge needs them)',
      fix: 'export RABBITMQ_HOST=127.0.0.1 RABBITMQ_USER=guest RABBITMQ_PASSWORD=guest',
    };
  }
  try {
    const conn = await withTimeout(amqp.connect(amqpUrl(config)), 'rabbitmq');
    await conn.close();
    return {
      name: 'rabbitmq',
      ok: true,
      detail: `${config.rabbitmq.host}:${config.rabbitmq.port} vhost ${config.rabbitmq.vhost}, queue ${config.rabbitmq.queue}`,
    };
  } catch (err) {
    return {
      name: 'rabbitmq',
      ok: false,
      detail: `${config.rabbitmq.host}:${config.rabbitmq.port}: ${errorText(err)}`,
      fix: 'npm run setup starts a local RabbitMQ; or set RABBITMQ_HOST / RABBITMQ_PORT / credentials',
    };
  }
}

/** `benchctl doctor`: checks every dependency and says exactly what is missing and how to fix it. */
export async function doctorCommand(): Promise<void> {
  const config = loadConfigOrExit();
  const checks = await Promise.all([
    checkDocker(config),
    checkTemporal(config),
    checkPostgres(config),
    checkRedis(config),
    checkRabbitmq(config),
  ]);
  for (const c of checks) {
    process.stdout.write(`${c.ok ? 'ok  ' : 'FAIL'} ${c.name.padEnd(9)} ${c.detail}\n`);
    if (!c.ok && c.fix) process.stdout.write(`     fix: ${c.fix}\n`);
  }
  if (checks.some((c) => !c.ok)) process.exitCode = 1;
}
