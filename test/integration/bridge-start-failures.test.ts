import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { WorkflowNotFoundError } from '@temporalio/client';
import type { GetMessage } from 'amqplib';
import { deadLetterQueueName } from '../../bridge';
import { createLogger } from '../../src/logger';
import { startRequestedRun } from '../../src/temporal/run-starter';
import { seedExperiment, type SeededExperiment } from '../support/database';
import { buildPlatformMessage } from '../support/platform';
import { startStack, type Stack } from '../support/stack';
import {
  pollUntil,
  publishLikePlatform,
  startFixture,
  withChannel,
  type BridgeFixture,
} from './bridge-harness';

/** Every message the dead-letter queue holds now, taken off it. */
async function drainDeadLetters(queue: string): Promise<GetMessage[]> {
  return withChannel(async (ch) => {
    const out: GetMessage[] = [];
    for (;;) {
      const m = await ch.get(deadLetterQueueName(queue), { noAck: true });
      if (m === false) return out;
      out.push(m);
    }
  });
}

/** The message id of a dead letter: its AMQP property, else its body's. */
function idOf(m: GetMessage): string {
  const property: unknown = m.properties.messageId;
  if (typeof property === 'string') return property;
  return String((JSON.parse(m.content.toString('utf8')) as { message_id?: unknown }).message_id);
}

function deadLetterCode(m: GetMessage): unknown {
  return m.properties.headers?.['x-agentbench-error-code'];
}

const quiet = createLogger({ level: 'silent' });

describe('bridge: refused and failing starts (real RabbitMQ, Redis, Postgres, Temporal)', () => {
  let stack: Stack;
  let seeded: SeededExperiment;
  const fixtures: BridgeFixture[] = [];
  const startedWorkflows: string[] = [];

  /** The real start path of `benchctl bridge`; nothing polls the stack's task queue, so runs just wait. */
  async function fixture(opts: { prefetch?: number } = {}): Promise<BridgeFixture> {
    const fx = await startFixture({
      ...opts,
      startRun: async (message, meta) => {
        const r = await startRequestedRun(
          { client: stack.client, pool: stack.db.pool, config: stack.config, log: quiet },
          message,
          meta.dedupSuffix,
        );
        startedWorkflows.push(r.workflowId);
        return r;
      },
    });
    fixtures.push(fx);
    return fx;
  }

  function valid(extra: Record<string, unknown> = {}): Record<string, unknown> & { message_id: string } {
    const msg = buildPlatformMessage(seeded, {
      runtimeSpec: { agent_image: 'bench/busybox:latest', case_exec_command: 'true' },
      queue: 'test',
    });
    return { ...msg, ...extra } as Record<string, unknown> & { message_id: string };
  }

  async function publish(fx: BridgeFixture, msg: Record<string, unknown> & { message_id: string }) {
    fx.trackSuffix(msg.message_id);
    // AMQP's message-id property holds at most 255 characters; the body's message_id is what counts.
    await publishLikePlatform(
      fx.queue,
      JSON.stringify(msg),
      msg.message_id.length <= 255 ? msg.message_id : undefined,
    );
  }

  before(async () => {
    stack = await startStack({ worker: false });
    seeded = await seedExperiment(stack.db.pool, { cases: 2 });
  });

  after(async () => {
    for (const fx of fixtures) await fx.cleanup();
    for (const id of startedWorkflows)
      await stack.client.workflow
        .getHandle(id)
        .terminate('test cleanup')
        .catch(() => undefined);
    await stack.stop();
  });

  test('a message for an experiment (or run cases) not in Postgres is dead-lettered with its code; no workflow starts', async () => {
    const fx = await fixture();
    const noExperiment = valid({ experiment: { id: '987654321', triggered_by: 'e2e-test' } });
    const base = valid();
    const runCases = base.run_cases as Array<Record<string, unknown>>;
    const noRunCase: Record<string, unknown> & { message_id: string } = {
      ...base,
      run_cases: [...runCases, { ...runCases[0], run_case_id: '987654322' }],
    };
    await publish(fx, noExperiment);
    await publish(fx, noRunCase);

    await pollUntil('both refusals', () => fx.bridge.stats().deadLettered === 2);
    const dead = await drainDeadLetters(fx.queue);
    const byId = new Map(dead.map((m) => [idOf(m), m]));
    assert.equal(deadLetterCode(byId.get(noExperiment.message_id)!), 'E_EXPERIMENT_NOT_FOUND');
    assert.equal(deadLetterCode(byId.get(noRunCase.message_id)!), 'E_RUN_CASE_NOT_FOUND');
    assert.match(
      String(byId.get(noRunCase.message_id)?.properties.headers?.['x-agentbench-error']),
      /^E_RUN_CASE_NOT_FOUND: 1 of 3 run cases are not rows of experiment \d+: 987654322$/,
    );
    for (const code of ['E_EXPERIMENT_NOT_FOUND', 'E_RUN_CASE_NOT_FOUND']) {
      const line = fx.logs.withCode(code)[0];
      assert.equal(line?.level, 50, `${code} is logged as an error`);
    }
    assert.equal(fx.bridge.stats().started, 0);
    for (const msg of [noExperiment, noRunCase]) {
      const experimentId = (msg.experiment as { id: string }).id;
      await assert.rejects(
        stack.client.workflow.getHandle(`experiment-${experimentId}-${msg.message_id}`).describe(),
        WorkflowNotFoundError,
      );
    }
  });

  test('a start Temporal refuses for the message itself is dead-lettered at once; too deep JSON never parses', async () => {
    const fx = await fixture();
    const longId = valid({ message_id: `m-${'x'.repeat(1000)}` });
    const hugeAgentKey = valid();
    hugeAgentKey.agent = { ...(hugeAgentKey.agent as object), agent_key: 'k'.repeat(5000) };
    await publish(fx, longId);
    await publish(fx, hugeAgentKey);
    const deep = `{"message_type":"experiment.run.requested","x":${'['.repeat(5000)}${']'.repeat(5000)}}`;
    const deepId = randomUUID();
    await publishLikePlatform(fx.queue, deep, deepId);

    await pollUntil('three dead letters', () => fx.bridge.stats().deadLettered === 3);
    const dead = await drainDeadLetters(fx.queue);
    const codes = new Map(dead.map((m) => [idOf(m), deadLetterCode(m)]));
    assert.equal(codes.get(longId.message_id), 'E_WORKFLOW_START_REJECTED');
    assert.equal(codes.get(hugeAgentKey.message_id), 'E_WORKFLOW_START_REJECTED');
    assert.equal(codes.get(deepId), 'E_MESSAGE_TOO_DEEP');
    assert.equal(
      fx.logs.withCode('E_WORKFLOW_START_FAILED').length,
      0,
      'a permanent failure is never requeued',
    );
    assert.equal(
      fx.logs.lines.filter((l) => l.msg === 'workflow start failed; retrying').length,
      0,
      'nor retried in process',
    );
    assert.equal(fx.bridge.stats().received, 3, 'each was delivered once');
  });

  test('a prefetch full of failing messages does not hold up the valid ones behind it', async () => {
    const prefetch = 16;
    const fx = await fixture({ prefetch });
    const poison = Array.from({ length: prefetch }, (_, i) =>
      i % 2 === 0
        ? valid({ message_id: `p${i}-${randomUUID()}-${'x'.repeat(1000)}` })
        : (() => {
            const m = valid();
            m.agent = { ...(m.agent as object), agent_key: 'k'.repeat(5000) };
            return m;
          })(),
    );
    const good = [valid(), valid(), valid()];
    const publishedAt = Date.now();
    for (const m of [...poison, ...good]) await publish(fx, m);

    // Before poison was told apart, these 3 waited behind ~90 s of retried starts.
    await pollUntil('the valid messages to start', () => fx.bridge.stats().started === 3, 30_000);
    const elapsedMs = Date.now() - publishedAt;
    await pollUntil('the poison to be dead-lettered', () => fx.bridge.stats().deadLettered === prefetch);
    const started = new Set(fx.logs.withCode('WORKFLOW_STARTED').map((l) => l.message_id));
    assert.deepEqual([...started].sort(), good.map((m) => m.message_id).sort());
    const dead = await drainDeadLetters(fx.queue);
    assert.equal(dead.length, prefetch, 'every poison message dead-lettered exactly once');
    assert.ok(dead.every((m) => deadLetterCode(m) === 'E_WORKFLOW_START_REJECTED'));
    // For the report: how long intake took behind a full prefetch of poison (not asserted).
    console.log(
      `[bridge-start-failures] 3 valid messages started ${elapsedMs} ms after the first of ${prefetch} poison ones was published`,
    );
  });
});
