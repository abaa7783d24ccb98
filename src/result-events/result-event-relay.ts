import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { connect, type ChannelModel, type ConfirmChannel } from 'amqplib';
import type pg from 'pg';
import type { Logger } from '../logger';
import { errorText } from '../domain/errors';
import { resultEventMessage } from '../domain/result-event';
import {
  countPendingEvents,
  prunePublishedEvents,
  relayPendingEvents,
  type PendingResultEvent,
} from '../db/result-event-outbox';
import type { ResultEventMetrics } from '../metrics/orchestrator-metrics';

/**
 * Publishes the outbox (src/db/result-event-outbox.ts) to a durable topic exchange, routing key =
 * event type, persistent, with publisher confirms: a batch is marked published only once the broker
 * confirmed all of it, in the transaction that locked it (`FOR UPDATE SKIP LOCKED`, so any number
 * of relays — every worker and API process runs one — share the work without sending an event
 * twice in normal operation). A broker outage stops this loop, never a case: events wait in
 * Postgres and go out when the broker is back; one that was sent but not confirmed goes out again
 * with the same `event_id` (at least once).
 */

interface ResultEventRelayParams {
  pool: pg.Pool;
  amqpUrl: string;
  exchange: string;
  deploymentId: string;
  log: Logger;
  /** Published events older than this are deleted from the outbox. */
  retentionDays: number;
  batchSize?: number;
  /** How long the relay waits after finding the outbox empty. */
  idleMs?: number;
  reconnect?: { initialDelayMs: number; maxDelayMs: number };
  /** A batch whose confirms take longer is treated as not sent (and sent again). */
  confirmTimeoutMs?: number;
  metrics?: ResultEventMetrics;
}

const DEFAULTS = {
  batchSize: 100,
  idleMs: 500,
  reconnect: { initialDelayMs: 500, maxDelayMs: 30_000 },
  confirmTimeoutMs: 10_000,
};
const CONNECT_TIMEOUT_MS = 10_000;
const PRUNE_INTERVAL_MS = 10 * 60_000;

interface BrokerSession {
  model: ChannelModel;
  channel: ConfirmChannel;
  lost: boolean;
}

/** A failure of the broker side (not the database), so the session is rebuilt. */
class BrokerError extends Error {
  override name = 'BrokerError';
}

export class ResultEventRelay {
  private readonly p: ResultEventRelayParams & typeof DEFAULTS;
  private readonly log: Logger;
  private readonly connectionName: string;
  private session: BrokerSession | null = null;
  private loop: Promise<void> | null = null;
  private stopping = false;
  private wake: (() => void) | null = null;
  private failing = false;
  private lastPrune = 0;
  private stopObserving: (() => void) | undefined;

  constructor(params: ResultEventRelayParams) {
    this.p = { ...DEFAULTS, ...params };
    this.log = params.log.child({ component: 'result-event-relay', exchange: params.exchange });
    this.connectionName = `agentbench-result-events ${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  }

  /** Starts relaying in the background; never throws (failures are retried and logged). */
  start(): void {
    if (this.loop) return;
    this.stopObserving = this.p.metrics?.observeRelay({
      connected: () => this.session !== null && !this.session.lost,
      pending: () => countPendingEvents(this.p.pool),
    });
    this.loop = this.run();
  }

  /** Ends after the batch in hand (or at once when idle); unconfirmed events stay pending. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    await this.loop;
    await this.closeSession();
    this.stopObserving?.();
  }

  private async run(): Promise<void> {
    let backoff = this.p.reconnect.initialDelayMs;
    while (!this.stopping) {
      try {
        const session = await this.ensureSession();
        const sent = await relayPendingEvents(this.p.pool, this.p.batchSize, (events) =>
          this.publish(session, events),
        );
        if (this.failing) {
          this.failing = false;
          this.log.info({ code: 'RESULT_EVENTS_RELAY_RESUMED' }, 'result events are being published again');
        }
        backoff = this.p.reconnect.initialDelayMs;
        await this.pruneNowAndThen();
        if (sent < this.p.batchSize) await this.sleep(this.p.idleMs);
      } catch (err) {
        if (this.stopping) break;
        const broker = err instanceof BrokerError;
        this.p.metrics?.relayFailed(broker ? 'broker' : 'database');
        if (broker) await this.closeSession();
        // One error line per outage, not one per retry: the pending gauge shows the backlog.
        if (!this.failing) {
          this.failing = true;
          this.log.error(
            {
              code: 'E_RESULT_EVENTS_RELAY_FAILED',
              side: broker ? 'broker' : 'database',
              error: errorText(err),
            },
            'result events cannot be published now; they stay in the outbox and are retried',
          );
        }
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, this.p.reconnect.maxDelayMs);
      }
    }
  }

  private async ensureSession(): Promise<BrokerSession> {
    if (this.session && !this.session.lost) return this.session;
    await this.closeSession();
    let model: ChannelModel;
    try {
      model = await connect(this.p.amqpUrl, {
        clientProperties: { connection_name: this.connectionName },
        timeout: CONNECT_TIMEOUT_MS,
        noDelay: true,
      });
    } catch (err) {
      throw new BrokerError(`connect: ${errorText(err)}`);
    }
    const session: BrokerSession = { model, channel: null as unknown as ConfirmChannel, lost: false };
    const lost = (): void => {
      session.lost = true;
    };
    // Without listeners an 'error' event would crash the process; a close is noticed on next use.
    model.on('error', lost);
    model.on('close', lost);
    try {
      session.channel = await model.createConfirmChannel();
      session.channel.on('error', lost);
      session.channel.on('close', lost);
      await session.channel.assertExchange(this.p.exchange, 'topic', { durable: true });
    } catch (err) {
      await model.close().catch(() => undefined);
      throw new BrokerError(`channel: ${errorText(err)}`);
    }
    this.session = session;
    this.log.info({ code: 'RESULT_EVENTS_RELAY_CONNECTED' }, 'result event relay connected');
    return session;
  }

  /** Sends a batch and resolves once the broker confirmed every message of it. */
  private async publish(session: BrokerSession, events: PendingResultEvent[]): Promise<void> {
    const { channel } = session;
    const sendAll = async () => {
      for (const event of events) {
        const body = Buffer.from(
          JSON.stringify(resultEventMessage(event, { deploymentId: this.p.deploymentId })),
        );
        const more = channel.publish(this.p.exchange, event.eventType, body, {
          persistent: true,
          contentType: 'application/json',
          messageId: event.eventId,
          type: event.eventType,
          timestamp: Math.floor(event.createdAt.getTime() / 1000),
          appId: 'agentbench-orchestrator',
        });
        // A channel that closes with a full buffer never drains: the deadline below covers this wait.
        if (!more) await new Promise<void>((resolve) => channel.once('drain', resolve));
      }
      await channel.waitForConfirms();
    };
    try {
      // One deadline for sending and confirms: this runs inside the outbox transaction, whose row
      // locks and pool connection must never be held by a broker that went away.
      await withTimeout(sendAll(), this.p.confirmTimeoutMs, 'publisher confirms');
    } catch (err) {
      session.lost = true;
      throw new BrokerError(errorText(err));
    }
    for (const event of events) this.p.metrics?.published(event.eventType);
  }

  private async pruneNowAndThen(): Promise<void> {
    if (Date.now() - this.lastPrune < PRUNE_INTERVAL_MS) return;
    this.lastPrune = Date.now();
    const pruned = await prunePublishedEvents(this.p.pool, this.p.retentionDays);
    if (pruned > 0)
      this.log.info({ code: 'RESULT_EVENTS_PRUNED', pruned }, 'old published result events deleted');
  }

  private async closeSession(): Promise<void> {
    const session = this.session;
    this.session = null;
    if (session) await session.model.close().catch(() => undefined);
  }

  /** A sleep that stop() cuts short. */
  private sleep(ms: number): Promise<void> {
    if (this.stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wake = null;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = null;
        resolve();
      };
    });
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} not received within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
