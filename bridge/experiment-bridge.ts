import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { connect, type Channel, type ChannelModel, type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import type { Redis } from 'ioredis';
import { parseExperimentMessage, type ExperimentRunRequested } from '../src/domain/message';
import type { Logger } from '../src/logger';
import type { BridgeMetrics } from '../src/metrics/orchestrator-metrics';
import type { Tracer } from '@opentelemetry/api';
import { noteDeliveryIds, noteDeliveryOutcome, traceDelivery } from './delivery-tracing';
import { dedupSuffix } from './dedup-key';
import { workflowIdForRun } from '../src/domain/experiment-run';
import {
  assertDeadLetterQueue,
  deadLetterQueueName,
  publishDeadLetter,
  type DeadLetterReason,
} from './dead-letter';
import {
  CONTRACT_LOCK_TTL,
  MessageLocks,
  processedKey,
  processingKey,
  type AcquireResult,
} from './redis-lock';
import { errorText } from '../src/domain/errors';
import { classifyStartFailure, type StartFailure } from '../src/temporal/start-failure';
import { republishWithStartAttempts, startAttemptsOf } from './start-attempts';

/**
 * RabbitMQ → Temporal: validates each `experiment.run.requested` delivery, deduplicates it, starts
 * the run's workflow through `startRun` and acks only once that start has returned (ARCHITECTURE
 * §1). Unlike the Python consumer (§13.3) nothing long-running happens in the delivery handler,
 * so heartbeats stay at the broker's default and `prefetch` deliveries are handled concurrently.
 */

export type StartRun = (
  message: ExperimentRunRequested,
  meta: { workflowId: string; dedupSuffix: string },
) => Promise<{ workflowId: string; started: boolean }>;

export interface BridgeDeps {
  amqpUrl: string;
  queue: string;
  prefetch: number;
  /** Redis for the CONTRACT §8.1 locks with contract TTLs; null = Temporal workflow-id dedup only. */
  redis: Redis | null;
  /** Overrides the locks built from `redis` (e.g. with configured TTLs). */
  locks?: MessageLocks;
  log: Logger;
  startRun: StartRun;
  reconnect?: { initialDelayMs: number; maxDelayMs: number };
  /** In-process tries of one delivery's start while its failure is transient. */
  startRetry?: { attempts: number; initialDelayMs: number };
  /**
   * Deliveries of one message whose start failed transiently before it is dead-lettered
   * (BRIDGE_START_MAX_ATTEMPTS, counted in the message's own header). Default 5.
   */
  startMaxAttempts?: number;
  /** Prometheus metrics; opt-in, so tests that do not look at them open no port. */
  metrics?: BridgeMetrics;
  /** Orchestrator traces: one span per delivery (delivery-tracing.ts); opt-in like metrics. */
  tracer?: Tracer;
}

export interface BridgeStats {
  received: number;
  started: number;
  duplicates: number;
  deadLettered: number;
  reconnects: number;
}

export interface BridgeHandle {
  stop(): Promise<void>;
  stats(): BridgeStats;
  /** True while connected to the broker and consuming the queue. */
  consuming(): boolean;
  waitForIdle(): Promise<void>;
}

const DEFAULT_RECONNECT = { initialDelayMs: 1000, maxDelayMs: 30_000 };
/** 0.5 + 1 + 2 + 4 + 8 s between tries: with 5 deliveries, a start rides out ~75 s of Temporal or Postgres outage. */
const DEFAULT_START_RETRY = { attempts: 6, initialDelayMs: 500 };
const DEFAULT_START_MAX_ATTEMPTS = 5;
const CHANNEL_CLOSE_GRACE_MS = 100;
const CONNECT_TIMEOUT_MS = 10_000;

/** How a delivery the Redis lock reports as a duplicate is counted and logged (then acked). */
const LOCKED_DUPLICATE = {
  processed: {
    reason: 'processed',
    outcome: 'duplicate_processed',
    code: 'E_DUPLICATE_MESSAGE_PROCESSED',
    key: processedKey,
    message: 'already processed; acked',
  },
  'held-by-other': {
    reason: 'processing',
    outcome: 'duplicate_processing',
    code: 'E_DUPLICATE_MESSAGE_PROCESSING',
    key: processingKey,
    message: 'being processed by another consumer; acked',
  },
} as const;

interface Session {
  model: ChannelModel;
  channel: Channel;
  confirm: ConfirmChannel;
  consumerTag: string;
  state: SessionState;
}

interface SessionState {
  lost: boolean;
  /** Set when we close it ourselves, so the close events are not reported as a loss. */
  closing: boolean;
  lastError: Error | undefined;
}

type StartOutcome =
  { ok: true; workflowId: string; started: boolean } | { ok: false; failure: StartFailure; attempts: number };

class ExperimentBridge implements BridgeHandle {
  private readonly log: Logger;
  private readonly locks: MessageLocks | null;
  private readonly reconnect: { initialDelayMs: number; maxDelayMs: number };
  private readonly startRetry: { attempts: number; initialDelayMs: number };
  private readonly startMaxAttempts: number;
  private readonly deadLetterQueue: string;
  /** Shown in the RabbitMQ management UI, and how an operator finds this bridge's connection. */
  private readonly connectionName: string;

  private readonly counters: BridgeStats = {
    received: 0,
    started: 0,
    duplicates: 0,
    deadLettered: 0,
    reconnects: 0,
  };
  private readonly inFlight = new Set<Promise<void>>();
  private readonly sleepers = new Set<() => void>();

  private session: Session | null = null;
  private everConnected = false;
  private connecting = false;
  private connectLoop: Promise<void> = Promise.resolve();
  private firstAttemptDone: () => void = () => undefined;
  private stopping = false;
  private stopped: Promise<void> | null = null;
  private readonly metrics: BridgeMetrics | undefined;
  private readonly stopObserving: (() => void) | undefined;

  constructor(private readonly deps: BridgeDeps) {
    this.log = deps.log.child({ component: 'bridge', queue: deps.queue });
    const ownerId = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
    this.locks =
      deps.locks ?? (deps.redis ? new MessageLocks(deps.redis, CONTRACT_LOCK_TTL, this.log, ownerId) : null);
    this.reconnect = deps.reconnect ?? DEFAULT_RECONNECT;
    this.startRetry = deps.startRetry ?? DEFAULT_START_RETRY;
    this.startMaxAttempts = deps.startMaxAttempts ?? DEFAULT_START_MAX_ATTEMPTS;
    this.deadLetterQueue = deadLetterQueueName(deps.queue);
    this.connectionName = `agentbench-bridge ${deps.queue} ${ownerId}`;
    this.metrics = deps.metrics;
    this.stopObserving = deps.metrics?.observeBridge({
      connected: () => this.consuming(),
      redisDegraded: () => this.locks === null || this.locks.isDegraded,
      deliveriesInFlight: () => this.inFlight.size,
    });
  }

  /** Resolves after the first connection attempt; a failed attempt keeps retrying in the background. */
  async start(): Promise<void> {
    if (this.locks) await this.locks.waitUntilReady();
    else this.log.warn('no Redis configured: deduplicating by Temporal workflow id only');
    await new Promise<void>((resolve) => {
      this.firstAttemptDone = resolve;
      this.beginConnecting(0);
    });
  }

  stats(): BridgeStats {
    return { ...this.counters };
  }

  consuming(): boolean {
    return this.session !== null && !this.session.state.lost;
  }

  async waitForIdle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  stop(): Promise<void> {
    this.stopped ??= this.shutdown();
    return this.stopped;
  }

  private async shutdown(): Promise<void> {
    this.stopping = true;
    for (const wake of [...this.sleepers]) wake();
    const current = this.session;
    if (current && !current.state.lost) {
      await current.channel.cancel(current.consumerTag).catch((err: unknown) => {
        this.log.warn({ error: errorText(err) }, 'consumer cancel failed');
      });
    }
    await this.connectLoop;
    await this.waitForIdle();
    if (this.session) await this.closeSession(this.session);
    this.session = null;
    this.stopObserving?.();
    this.log.info({ stats: this.counters }, 'bridge stopped');
  }

  // ---- connection lifecycle -----------------------------------------------------------------

  private beginConnecting(firstDelayMs: number): void {
    this.connecting = true;
    this.connectLoop = this.connectUntilConsuming(firstDelayMs);
  }

  /** Retries forever with exponential backoff until consuming or stopped; never throws. */
  private async connectUntilConsuming(firstDelayMs: number): Promise<void> {
    let wait = firstDelayMs;
    let backoff = this.reconnect.initialDelayMs;
    try {
      while (!this.stopping) {
        if (wait > 0) await this.sleep(wait);
        if (this.stopping) return;
        try {
          const session = await this.openSession();
          if (this.stopping) {
            await this.closeSession(session);
            return;
          }
          if (!session.state.lost) {
            this.session = session;
            if (this.everConnected) {
              this.counters.reconnects += 1;
              this.metrics?.reconnected();
            }
            this.everConnected = true;
            this.log.info(
              {
                prefetch: this.deps.prefetch,
                dead_letter_queue: this.deadLetterQueue,
                reconnects: this.counters.reconnects,
              },
              'consumer started',
            );
            return;
          }
        } catch (err) {
          this.log.error(
            { code: 'E_MQ_CONNECTION_LOST', error: errorText(err), retry_in_ms: backoff },
            'rabbitmq connect failed; retrying',
          );
        } finally {
          this.firstAttemptDone();
        }
        wait = backoff;
        backoff = Math.min(backoff * 2, this.reconnect.maxDelayMs);
      }
    } finally {
      // Synchronous with the success return above, so a loss reported right after it starts a new loop.
      this.connecting = false;
    }
  }

  private async openSession(): Promise<Session> {
    const model = await connect(this.deps.amqpUrl, {
      clientProperties: { connection_name: this.connectionName },
      // A black-holed broker address would otherwise hang each attempt for the OS TCP timeout.
      timeout: CONNECT_TIMEOUT_MS,
      // amqplib leaves Nagle on: a dead-letter publish (method, header and body frames) then waits
      // for the broker's delayed ACK, ~40 ms, before the message and its ack are complete.
      noDelay: true,
    });
    const state: SessionState = { lost: false, closing: false, lastError: undefined };
    let session: Session | null = null;
    const noteError = (err: Error): void => {
      state.lastError = err;
    };
    const lost = (what: string, err?: Error): void => {
      this.sessionLost(session ?? { model, state }, `${what} closed`, err ?? state.lastError);
    };
    // When the connection drops, its channels close first and without a reason; the grace lets
    // the connection's own error (e.g. CONNECTION_FORCED) be the one reported.
    const onChannelClose = (what: string) => (): void => {
      setTimeout(() => lost(what), CHANNEL_CLOSE_GRACE_MS);
    };
    model.on('error', noteError);
    model.on('close', (err?: Error) => lost('connection', err));
    try {
      const channel = await model.createChannel();
      channel.on('error', noteError);
      channel.on('close', onChannelClose('channel'));
      // Exactly the platform's declaration (CONTRACT §1.1): any argument would be a 406 mismatch.
      await channel.assertQueue(this.deps.queue, { durable: true });
      await channel.prefetch(this.deps.prefetch);

      const confirm = await model.createConfirmChannel();
      confirm.on('error', noteError);
      confirm.on('close', onChannelClose('dead-letter channel'));
      await assertDeadLetterQueue(confirm, this.deps.queue);

      const pending: Session = { model, channel, confirm, consumerTag: '', state };
      session = pending;
      const { consumerTag } = await channel.consume(this.deps.queue, (msg) => this.onDelivery(pending, msg), {
        noAck: false,
      });
      pending.consumerTag = consumerTag;
      return pending;
    } catch (err) {
      state.closing = true;
      await model.close().catch(() => undefined);
      throw err;
    }
  }

  private sessionLost(session: Pick<Session, 'model' | 'state'>, what: string, err: Error | undefined): void {
    const { state } = session;
    if (state.lost) return;
    state.lost = true;
    if (state.closing) return;
    if (this.session === session) this.session = null;
    this.log.error(
      {
        code: 'E_MQ_CONNECTION_LOST',
        error: err ? errorText(err) : what,
        retry_in_ms: this.reconnect.initialDelayMs,
      },
      `rabbitmq ${what}; reconnecting (unacked messages will be redelivered)`,
    );
    state.closing = true;
    void session.model.close().catch(() => undefined);
    if (!this.stopping && !this.connecting) this.beginConnecting(this.reconnect.initialDelayMs);
  }

  private async closeSession(session: Session): Promise<void> {
    session.state.closing = true;
    // Channels first: amqplib interleaves the channels' frames, so a connection close can reach the
    // broker ahead of an ack still buffered on its channel, and the acked delivery is requeued (a
    // dead-lettered message was found back in the queue). A channel's close follows its own acks.
    if (!session.state.lost)
      await Promise.all([session.channel.close(), session.confirm.close()]).catch(() => undefined);
    await session.model.close().catch(() => undefined);
  }

  /** A sleep that stop() cuts short, so shutdown never waits out a backoff. */
  private sleep(ms: number): Promise<void> {
    if (this.stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleepers.add(wake);
    });
  }

  // ---- deliveries ---------------------------------------------------------------------------

  private onDelivery(session: Session, msg: ConsumeMessage | null): void {
    if (msg === null) {
      // The broker cancelled our consumer (e.g. the queue was deleted): re-declare by reconnecting.
      this.sessionLost(session, 'consumer cancelled by broker', undefined);
      return;
    }
    const handling = traceDelivery(this.deps.tracer, this.deps.queue, msg, () =>
      this.handleDelivery(session, msg),
    )
      .catch((err: unknown) => {
        // handleDelivery settles every message itself; this only keeps a bug from crashing the process.
        this.log.error({ code: 'E_MESSAGE_PROCESS', error: errorText(err) }, 'delivery handler failed');
      })
      .finally(() => this.inFlight.delete(handling));
    this.inFlight.add(handling);
  }

  private async handleDelivery(session: Session, msg: ConsumeMessage): Promise<void> {
    this.counters.received += 1;
    this.metrics?.messageReceived();
    const parsed = parseExperimentMessage(msg.content);
    if (!parsed.ok) {
      await this.deadLetter(session, msg, { code: parsed.code, error: parsed.error });
      return;
    }
    try {
      await this.dispatch(session, msg, parsed.message);
    } catch (err) {
      // Only a bug gets here (locks and startRun failures are handled); keep the message.
      const error = `E_MESSAGE_PROCESS: ${errorText(err)}`;
      await this.deadLetter(session, msg, { code: 'E_MESSAGE_PROCESS', error });
    }
  }

  private async dispatch(
    session: Session,
    msg: ConsumeMessage,
    message: ExperimentRunRequested,
  ): Promise<void> {
    const suffix = dedupSuffix(message.message_id, msg.content);
    const workflowId = workflowIdForRun(message.experiment.id, suffix);
    const ctx = {
      message_id: message.message_id,
      experiment_id: message.experiment.id,
      workflow_id: workflowId,
    };
    noteDeliveryIds({ messageId: message.message_id, experimentId: message.experiment.id, workflowId });
    this.log.info(
      {
        code: 'MESSAGE_RECEIVED',
        ...ctx,
        run_cases: message.run_cases.length,
        redelivered: msg.fields.redelivered,
        start_attempts: startAttemptsOf(msg),
      },
      'message received',
    );

    const lock: AcquireResult | 'unlocked' = this.locks ? await this.locks.acquire(suffix) : 'unlocked';
    if (lock === 'processed' || lock === 'held-by-other') {
      const d = LOCKED_DUPLICATE[lock];
      this.counters.duplicates += 1;
      this.metrics?.duplicate(d.reason);
      noteDeliveryOutcome(d.outcome);
      this.log.info({ code: d.code, key: d.key(suffix), ...ctx }, d.message);
      this.settle(session, msg, 'ack');
      return;
    }

    const outcome = await this.startWithRetry(message, workflowId, suffix, ctx);
    if (!outcome.ok) {
      await this.locks?.release(suffix);
      this.metrics?.startFailed();
      await this.startFailed(session, msg, outcome.failure, outcome.attempts, ctx);
      return;
    }
    await this.locks?.markProcessed(suffix);
    if (outcome.started) {
      this.counters.started += 1;
      this.metrics?.runStarted();
      noteDeliveryOutcome('started');
      this.log.info(
        { code: 'WORKFLOW_STARTED', ...ctx, workflow_id: outcome.workflowId },
        'workflow started',
      );
    } else {
      this.counters.duplicates += 1;
      this.metrics?.duplicate('workflow_exists');
      noteDeliveryOutcome('workflow_exists');
      this.log.info(
        { code: 'E_DUPLICATE_WORKFLOW', ...ctx, workflow_id: outcome.workflowId },
        'workflow already exists for this message',
      );
    }
    this.settle(session, msg, 'ack');
  }

  /**
   * A permanent failure is dead-lettered under its code at once; a transient one is published again
   * with one more start attempt counted, and dead-lettered once BRIDGE_START_MAX_ATTEMPTS deliveries
   * have failed. While stopping, the delivery is simply returned (the stop may have cut it short).
   */
  private async startFailed(
    session: Session,
    msg: ConsumeMessage,
    failure: StartFailure,
    tries: number,
    ctx: Record<string, unknown>,
  ): Promise<void> {
    if (failure.kind === 'permanent') {
      await this.deadLetter(session, msg, { code: failure.code, error: failure.error });
      return;
    }
    const deliveries = startAttemptsOf(msg) + 1;
    const fields = {
      code: 'E_WORKFLOW_START_FAILED',
      ...ctx,
      attempts: tries,
      start_attempts: deliveries,
      max_start_attempts: this.startMaxAttempts,
      error: failure.error,
    };
    if (this.stopping) {
      this.log.error(fields, 'workflow start failed while stopping; message returned to the queue');
      noteDeliveryOutcome('start_failed_requeued', 'E_WORKFLOW_START_FAILED');
      this.settle(session, msg, 'requeue');
      return;
    }
    if (deliveries >= this.startMaxAttempts) {
      await this.deadLetter(session, msg, {
        code: 'E_WORKFLOW_START_FAILED',
        error: `E_WORKFLOW_START_FAILED: ${deliveries} deliveries failed to start, the last with: ${failure.error}`,
      });
      return;
    }
    this.log.error(fields, 'workflow start failed; message published again for a later attempt');
    try {
      await republishWithStartAttempts(session.confirm, this.deps.queue, msg, deliveries);
    } catch (err) {
      // Not acked: the broker redelivers it (uncounted) on the fresh connection a reconnect opens.
      this.log.error({ code: 'E_NACK_FAILED', ...ctx, error: errorText(err) }, 'republish failed');
      this.sessionLost(session, 'republish failed', err instanceof Error ? err : undefined);
      return;
    }
    noteDeliveryOutcome('start_failed_requeued', 'E_WORKFLOW_START_FAILED');
    this.settle(session, msg, 'ack');
  }

  private async startWithRetry(
    message: ExperimentRunRequested,
    workflowId: string,
    suffix: string,
    ctx: Record<string, unknown>,
  ): Promise<StartOutcome> {
    let delay = this.startRetry.initialDelayMs;
    for (let attempt = 1; ; attempt += 1) {
      try {
        const result = await this.deps.startRun(message, { workflowId, dedupSuffix: suffix });
        return { ok: true, ...result };
      } catch (err) {
        const failure = classifyStartFailure(err);
        if (failure.kind === 'permanent' || attempt >= this.startRetry.attempts || this.stopping)
          return { ok: false, failure, attempts: attempt };
        this.log.warn(
          { ...ctx, attempt, retry_in_ms: delay, error: failure.error },
          'workflow start failed; retrying',
        );
        await this.sleep(delay);
        if (this.stopping) return { ok: false, failure, attempts: attempt };
        delay *= 2;
      }
    }
  }

  private async deadLetter(session: Session, msg: ConsumeMessage, reason: DeadLetterReason): Promise<void> {
    const message_id: unknown = msg.properties.messageId;
    this.log.error(
      { code: reason.code, error: reason.error, message_id, dead_letter_queue: this.deadLetterQueue },
      'E_MESSAGE_PROCESS: message rejected; moving it to the dead-letter queue',
    );
    try {
      await publishDeadLetter(session.confirm, this.deps.queue, msg, reason);
    } catch (err) {
      // Not acked, so the broker redelivers it on the fresh connection that a reconnect opens.
      this.log.error(
        { code: 'E_MESSAGE_PROCESS', error: errorText(err), message_id },
        'dead-letter publish failed',
      );
      this.sessionLost(session, 'dead-letter publish failed', err instanceof Error ? err : undefined);
      return;
    }
    this.counters.deadLettered += 1;
    this.metrics?.deadLetter(reason.code);
    noteDeliveryOutcome('dead_lettered', reason.code);
    this.settle(session, msg, 'ack');
  }

  /** Ack or requeue on the delivering channel; a dead channel means the broker redelivers anyway. */
  private settle(session: Session, msg: ConsumeMessage, how: 'ack' | 'requeue'): void {
    const code = how === 'ack' ? 'E_ACK_FAILED' : 'E_NACK_FAILED';
    if (session.state.lost) {
      this.log.warn(
        { code, delivery_tag: msg.fields.deliveryTag },
        'channel gone; the broker will redeliver',
      );
      return;
    }
    try {
      if (how === 'ack') session.channel.ack(msg);
      else session.channel.nack(msg, false, true);
    } catch (err) {
      this.log.warn({ code, delivery_tag: msg.fields.deliveryTag, error: errorText(err) }, `${how} failed`);
    }
  }
}

export async function startBridge(deps: BridgeDeps): Promise<BridgeHandle> {
  const bridge = new ExperimentBridge(deps);
  await bridge.start();
  return bridge;
}
