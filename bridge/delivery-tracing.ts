import {
  context,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Tracer,
} from '@opentelemetry/api';
import type { ConsumeMessage } from 'amqplib';
import { EXPERIMENT_ID_ATTR, WORKFLOW_ID_ATTR } from '../src/tracing/benchmark-span-attributes';
import { errorText } from '../src/domain/errors';

/**
 * One span per delivery, around everything the bridge does with it (parse, dedup, workflow start,
 * ack), so a run's trace starts at the queue: the workflow start inside is its child. Attributes
 * are ids only — never the body, never the AMQP URL. Messaging keys follow the OTel semantic
 * conventions. A W3C `traceparent` header on the message, if the publisher set one, is the parent.
 */

type DeliveryOutcome =
  | 'started'
  | 'workflow_exists'
  | 'duplicate_processed'
  | 'duplicate_processing'
  | 'start_failed_requeued'
  | 'dead_lettered';

const OUTCOME_ATTR = 'benchmark.bridge.outcome';
const FAILED: ReadonlySet<DeliveryOutcome> = new Set(['start_failed_requeued', 'dead_lettered']);

/** Only the two W3C keys, only as strings: AMQP header values may be anything. */
function traceCarrier(msg: ConsumeMessage): Record<string, string> {
  const headers: Record<string, unknown> = msg.properties.headers ?? {};
  const carrier: Record<string, string> = {};
  for (const key of ['traceparent', 'tracestate']) {
    const value = headers[key];
    if (typeof value === 'string') carrier[key] = value;
  }
  return carrier;
}

/** Runs `handle` inside the delivery's span; without a tracer it just runs it. */
export function traceDelivery(
  tracer: Tracer | undefined,
  queue: string,
  msg: ConsumeMessage,
  handle: () => Promise<void>,
): Promise<void> {
  if (!tracer) return handle();
  const parent = propagation.extract(ROOT_CONTEXT, traceCarrier(msg));
  const messageId: unknown = msg.properties.messageId;
  return tracer.startActiveSpan(
    `${queue} process`,
    {
      kind: SpanKind.CONSUMER,
      attributes: {
        'messaging.system': 'rabbitmq',
        'messaging.operation.type': 'process',
        'messaging.destination.name': queue,
        'benchmark.bridge.redelivered': msg.fields.redelivered,
        ...(typeof messageId === 'string' ? { 'messaging.message.id': messageId } : {}),
      },
    },
    parent,
    async (span) => {
      try {
        await handle();
      } catch (err) {
        span.setStatus({
          code: SpanStatusCode.ERROR,
          message: errorText(err),
        });
        throw err;
      } finally {
        span.end();
      }
    },
  );
}

/** The parsed message's ids on the current delivery's span (a no-op outside one). */
export function noteDeliveryIds(ids: { messageId: string; experimentId: number; workflowId: string }): void {
  trace.getSpan(context.active())?.setAttributes({
    'messaging.message.id': ids.messageId,
    [EXPERIMENT_ID_ATTR]: String(ids.experimentId),
    [WORKFLOW_ID_ATTR]: ids.workflowId,
  });
}

/**
 * How the delivery was settled, on its span; a requeue or a dead letter marks it failed with the
 * error code only (an error text may quote the message).
 */
export function noteDeliveryOutcome(outcome: DeliveryOutcome, code?: string): void {
  const span = trace.getSpan(context.active());
  if (!span) return;
  span.setAttribute(OUTCOME_ATTR, outcome);
  if (FAILED.has(outcome)) span.setStatus({ code: SpanStatusCode.ERROR, ...(code ? { message: code } : {}) });
}
