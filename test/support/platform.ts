import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import amqp from 'amqplib';
import assert from 'node:assert/strict';
import type pg from 'pg';
import { parseExperimentMessage } from '../../src/domain/message';
import { saveRunRequest } from '../../src/db/run-request-repository';
import { seedExperiment, type SeededExperiment } from './database';

/** The message exactly as the platform's own publisher produced it (ids as strings). */
export function platformMessageExample(): Record<string, unknown> {
  // A copy of shared/contract-data/platform-message-example.json, byte for byte.
  return JSON.parse(
    readFileSync(path.resolve(__dirname, '../fixtures/platform-message-example.json'), 'utf8'),
  ) as Record<string, unknown>;
}

/**
 * Builds a v2 message for seeded rows the way the platform's runner.ts does: ids as strings,
 * one run case per data item, and `queue_message_id` written after the publish.
 */
export function buildPlatformMessage(
  seeded: SeededExperiment,
  opts: {
    runtimeSpec: Record<string, unknown>;
    queue: string;
    userInput?: (i: number) => string;
    scorers?: unknown[];
    /** Extra fields of run case i (e.g. mock_config, which the platform does not send today). */
    caseExtras?: (i: number) => Record<string, unknown>;
  },
): Record<string, unknown> {
  const example = platformMessageExample();
  const exampleCase = (example.run_cases as Array<Record<string, unknown>>)[0] ?? {};
  return {
    ...example,
    message_id: randomUUID(),
    produced_at: new Date().toISOString(),
    source: { service: 'arcloop-agent-benchmark', queue: opts.queue },
    experiment: { id: String(seeded.experimentId), triggered_by: 'e2e-test' },
    dataset: { id: String(seeded.datasetId), name: 'e2e dataset' },
    agent: {
      id: String(seeded.agentId),
      name: 'E2E Agent',
      agent_key: 'e2e-agent',
      version: 'v1',
      runtime_spec_json: opts.runtimeSpec,
    },
    scorers: opts.scorers ?? [],
    run_cases: seeded.runCaseIds.map((runCaseId, i) => ({
      ...exampleCase,
      run_case_id: String(runCaseId),
      data_item_id: String(seeded.dataItemIds[i]),
      attempt_no: 1,
      user_input: opts.userInput ? opts.userInput(i) : String(exampleCase.user_input),
      ...(opts.caseExtras ? opts.caseExtras(i) : {}),
    })),
  };
}

/**
 * Publishes as platform/lib/rabbitmq.ts does (CONTRACT §1.1), then records queue_message_id.
 * Returns when the message was handed to the broker (Date.now()): the connection handshake before
 * it (~80 ms here) is the publisher's, and no consumer can see the message earlier.
 * `noDelay`: without it (amqplib's default, so presumably the platform's) the body frame waits
 * for the broker's delayed ACK, and the message reaches the queue ~40 ms after `sentAt`.
 */
export async function publishAsPlatform(
  amqpUrl: string,
  queue: string,
  message: Record<string, unknown>,
  pool?: pg.Pool,
  opts: { noDelay?: boolean } = {},
): Promise<{ sentAt: number }> {
  const conn = await amqp.connect(amqpUrl, { noDelay: opts.noDelay === true });
  try {
    const ch = await conn.createConfirmChannel();
    await ch.assertQueue(queue, { durable: true });
    const messageId = String(message.message_id);
    const sentAt = Date.now();
    ch.sendToQueue(queue, Buffer.from(JSON.stringify(message)), {
      persistent: true,
      contentType: 'application/json',
      messageId,
    });
    await ch.waitForConfirms();
    await ch.close();
    if (pool) {
      const experiment = message.experiment as { id: string };
      await pool.query('UPDATE experiments SET queue_message_id = $2 WHERE id = $1', [
        Number(experiment.id),
        messageId,
      ]);
    }
    return { sentAt };
  } finally {
    await conn.close();
  }
}

export async function publishRaw(amqpUrl: string, queue: string, body: string): Promise<void> {
  const conn = await amqp.connect(amqpUrl);
  try {
    const ch = await conn.createConfirmChannel();
    await ch.assertQueue(queue, { durable: true });
    ch.sendToQueue(queue, Buffer.from(body), { persistent: true, contentType: 'application/json' });
    await ch.waitForConfirms();
    await ch.close();
  } finally {
    await conn.close();
  }
}

/**
 * Stores the platform's message for the seeded rows as run-starter does (request and case inputs,
 * no workflow started); `extraCaseIds` adds cases of other experiments to the run. Returns the
 * run's workflow id.
 */
export async function storeRunRequest(
  pool: pg.Pool,
  seeded: SeededExperiment,
  runtimeSpec: Record<string, unknown> = { agent_image: 'bench/busybox:latest', case_exec_command: 'true' },
  extraCaseIds: number[] = [],
): Promise<string> {
  const parsed = parseExperimentMessage(
    JSON.stringify(buildPlatformMessage(seeded, { queue: 'direct', runtimeSpec })),
  );
  assert.ok(parsed.ok);
  const { run_cases: cases, ...request } = parsed.message;
  const workflowId = `stored-run-${seeded.experimentId}-${parsed.message.message_id}`;
  await saveRunRequest(pool, {
    workflowId,
    experimentId: seeded.experimentId,
    messageId: parsed.message.message_id,
    request,
    cases: [
      ...cases.map((c) => ({ runCaseId: c.run_case_id, caseInput: c })),
      ...extraCaseIds.map((runCaseId) => ({ runCaseId, caseInput: { run_case_id: runCaseId } })),
    ],
  });
  return workflowId;
}

/** Seeds platform rows for `cases` cases and stores their run (no workflow started): for tests of a run's rows. */
export async function seedStoredRun(
  pool: pg.Pool,
  cases: number,
  runtimeSpec?: Record<string, unknown>,
): Promise<{ seeded: SeededExperiment; workflowId: string }> {
  const seeded = await seedExperiment(pool, { cases });
  return { seeded, workflowId: await storeRunRequest(pool, seeded, runtimeSpec) };
}
