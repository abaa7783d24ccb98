import type pg from 'pg';
import type { Registry } from 'prom-client';
import { amqpUrl, type Config } from '../config';
import type { Logger } from '../logger';
import { ResultEventMetrics } from '../metrics/orchestrator-metrics';
import { ResultEventRelay } from './result-event-relay';

/**
 * The relay of a long-running process (`benchctl worker`, `benchctl api`), started, or null when
 * result events are off (RESULT_EVENTS_ENABLED=false) or this process has no RabbitMQ settings —
 * then events wait in the outbox for a process that has them, and a warning says so.
 */
export function startResultEventRelay(
  config: Config,
  pool: pg.Pool,
  log: Logger,
  registry?: Registry,
): ResultEventRelay | null {
  if (!config.resultEvents.enabled) return null;
  const { host, user, password } = config.rabbitmq;
  if (!host || !user || password === undefined) {
    log.warn(
      { code: 'RESULT_EVENTS_NO_BROKER' },
      'RESULT_EVENTS_ENABLED but RABBITMQ_HOST/USER/PASSWORD are not set: this process does not publish result events (they wait in the outbox)',
    );
    return null;
  }
  const relay = new ResultEventRelay({
    pool,
    amqpUrl: amqpUrl(config),
    exchange: config.resultEvents.exchange,
    deploymentId: config.deploymentId,
    log,
    retentionDays: config.resultEvents.retentionDays,
    metrics: registry ? new ResultEventMetrics(registry) : undefined,
  });
  relay.start();
  return relay;
}
