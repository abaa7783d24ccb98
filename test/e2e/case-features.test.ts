import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import { promisify } from 'node:util';
import { historyToJSON } from '@temporalio/common/lib/proto-utils';
import { parseExperimentMessage } from '../../src/domain/message';
import type { ExperimentRunResult } from '../../src/domain/experiment-run';
import { startExperimentRun } from '../../src/temporal/run-starter';
import { seedExperiment, type SeededExperiment } from '../support/database';
import { buildPlatformMessage } from '../support/platform';
import { captureLogger, managedContainers, startStack, type Stack } from '../support/stack';
import { openAiReply, startLlmJudgeServer, type LlmJudgeServer } from '../support/llm-judge-server';

const exec = promisify(execFile);

/**
 * What a case gets besides its container, through the real pipeline: OTel trajectories (any SDK,
 * zero config; hand-posting agents of the original), the stdout fallback, the per-case mock
 * gateway, and scoring by an LLM judge — with the judge's API key never stored anywhere of ours.
 */
describe('case features end to end', () => {
  const { log, lines } = captureLogger('info');
  let stack: Stack;
  let judge: LlmJudgeServer;
  const workflowIds: string[] = [];

  before(async () => {
    await exec('bash', [path.resolve(__dirname, '../../scripts/build-images')], { timeout: 900_000 });
    judge = await startLlmJudgeServer();
    stack = await startStack({
      log,
      env: {
        OTEL_FLUSH_GRACE_MS: '1500',
        CONSUMER_CONCURRENT_CASES: '2',
        AGENTBENCH_SECRETS_KEY: randomBytes(32).toString('base64'),
      },
    });
  });

  after(async () => {
    assert.deepEqual(await managedContainers(stack.docker, workflowIds), [], 'no container of ours is left');
    await stack?.stop();
    await judge?.close();
  });

  async function run(
    seeded: SeededExperiment,
    runtimeSpec: Record<string, unknown>,
    extra: { scorers?: unknown[]; caseExtras?: (i: number) => Record<string, unknown> } = {},
  ) {
    const parsed = parseExperimentMessage(
      JSON.stringify(buildPlatformMessage(seeded, { queue: 'direct', runtimeSpec, ...extra })),
    );
    assert.ok(parsed.ok);
    const r = await startExperimentRun(
      { client: stack.client, pool: stack.db.pool, config: stack.config, log },
      parsed.message,
      parsed.message.message_id,
    );
    workflowIds.push(r.workflowId);
    const handle = stack.client.workflow.getHandle(r.workflowId);
    const result = (await handle.result()) as ExperimentRunResult;
    assert.equal(result.outcome, 'completed');
    const { rows } = await stack.db.pool.query<{
      id: number;
      status: string;
      error_message: string | null;
      agent_output: unknown;
      agent_trajectory: Array<Record<string, unknown>>;
      usage_json: Record<string, unknown>;
      artifacts_json: Record<string, unknown>;
      input_tokens: number | null;
      final_score: number | null;
    }>('SELECT * FROM run_cases WHERE experiment_id = $1 ORDER BY id', [seeded.experimentId]);
    return { rows, handle };
  }

  test('an agent on the OpenTelemetry SDK, with nothing but the injected env, gets its spans as the trajectory, stored under its own case', async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: 2 });
    // The agent also reports the OTel env it was given (a JSON line without `output`: the whole
    // object becomes agent_output).
    const { rows } = await run(seeded, {
      agent_image: 'bench/otel-sdk-agent:latest',
      sandbox_start_command: 'sleep infinity',
      case_exec_command:
        'python3 /agent/run_case.py "$BENCHMARK_USER_INPUT" >/dev/null && printf \'{"resource_attributes":"%s","service_name":"%s"}\' "$OTEL_RESOURCE_ATTRIBUTES" "$OTEL_SERVICE_NAME"',
    });
    assert.equal(rows.length, 2);
    for (const [i, row] of rows.entries()) {
      assert.equal(row.status, 'success', row.error_message ?? '');
      const runCaseId = Number(row.id);
      const dataItemId = seeded.dataItemIds[i] as number;
      assert.equal(runCaseId, seeded.runCaseIds[i]);
      // CONTRACT §4.3 (the 159b623 set ARCHITECTURE §5.6 brings back): experiment, run case, data item.
      const expected = {
        'benchmark.run_case_id': String(runCaseId),
        'benchmark.experiment_id': String(seeded.experimentId),
        'benchmark.data_item_id': String(dataItemId),
      };
      const injected = row.agent_output as { resource_attributes: string; service_name: string };
      const attributes = Object.fromEntries(
        injected.resource_attributes.split(',').map((kv) => kv.split('=') as [string, string]),
      );
      assert.deepEqual(attributes, expected, injected.resource_attributes);
      assert.ok(injected.service_name !== '', 'OTEL_SERVICE_NAME is set');

      const steps = row.agent_trajectory;
      assert.ok(steps.length >= 2, `steps: ${JSON.stringify(steps)}`);
      assert.equal(row.usage_json.trajectory_source, 'spans');
      const ids = new Set(steps.map((s) => s.span_id));
      assert.ok(
        steps.slice(1).every((s) => ids.has(s.parent_span_id)),
        'child steps link to their parent span',
      );
      assert.ok(
        steps.some((s) => Object.keys((s.attributes as object) ?? {}).length > 0),
        'picked attributes kept',
      );
      assert.ok((row.input_tokens ?? 0) > 0, 'gen_ai.usage tokens filled input_tokens');

      // The stored spans: the SDK sent the injected attributes as its resource, and ingest filed
      // every span under that case (the agent's four: agent.run, llm.plan, tool.search, llm.answer).
      const { rows: spans } = await stack.db.pool.query<{
        name: string;
        run_case_id: string;
        experiment_id: string;
        service_name: string;
        resource_attributes: Record<string, unknown>;
      }>(
        `SELECT name, run_case_id::text, experiment_id::text, service_name, resource_attributes
           FROM otel_traces WHERE resource_attributes->>'benchmark.run_case_id' = $1 ORDER BY start_time`,
        [String(runCaseId)],
      );
      assert.deepEqual(spans.map((s) => s.name).sort(), [
        'agent.run',
        'llm.answer',
        'llm.plan',
        'tool.search',
      ]);
      for (const span of spans) {
        assert.equal(span.run_case_id, String(runCaseId), span.name);
        assert.equal(span.experiment_id, String(seeded.experimentId), span.name);
        assert.equal(span.service_name, injected.service_name, span.name);
        for (const [key, value] of Object.entries(expected))
          assert.equal(span.resource_attributes[key], value, `${span.name} ${key}`);
      }
    }
    const { rows: misfiled } = await stack.db.pool.query(
      `SELECT run_case_id, resource_attributes->>'benchmark.run_case_id' AS tagged FROM otel_traces
        WHERE run_case_id = ANY($1::bigint[]) AND resource_attributes->>'benchmark.run_case_id' <> run_case_id::text`,
      [seeded.runCaseIds],
    );
    assert.deepEqual(misfiled, [], 'no span is filed under another case than its resource names');
  });

  test('an agent of the original posting OTLP JSON by hand to {{mock.base_url}}, without a token, is attributed to its case', async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: 2 });
    const { rows } = await run(seeded, {
      agent_image: 'bench/otel-manual-agent:latest',
      sandbox_start_command: 'sleep infinity',
      case_exec_command:
        'OTEL_EXPORTER_OTLP_HEADERS= python3 /agent/post_spans.py {{mock.base_url}} {{run_case.run_case_id}} {{experiment.id}}',
    });
    for (const row of rows) {
      assert.equal(row.status, 'success', row.error_message ?? '');
      assert.ok(row.agent_trajectory.length >= 2, JSON.stringify(row.agent_trajectory));
    }
    const { rows: spanCases } = await stack.db.pool.query<{ run_case_id: number; n: number }>(
      'SELECT run_case_id, count(*)::int AS n FROM otel_traces WHERE run_case_id = ANY($1::bigint[]) GROUP BY run_case_id',
      [seeded.runCaseIds],
    );
    assert.equal(spanCases.length, 2, 'each case has its own spans');
  });

  test('a case command that outlives its timeout is killed: status timeout, not retried, container gone', async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: 1 });
    const started = Date.now();
    const { rows, handle } = await run(seeded, {
      agent_image: 'bench/busybox:latest',
      sandbox_start_command: 'sleep infinity',
      case_timeout_seconds: 2,
      case_exec_command: `echo started; sleep 120; echo '{"output":"never"}'`,
    });
    assert.ok(Date.now() - started < 60_000, 'the run did not wait for the command');
    assert.equal(rows[0]?.status, 'timeout');
    assert.match(
      rows[0]?.error_message ?? '',
      /^E_CASE_TIMEOUT: case_exec_command exceeded 2s and was killed/,
    );
    const { rows: exp } = await stack.db.pool.query<{ queue_status: string }>(
      'SELECT queue_status FROM experiments WHERE id = $1',
      [seeded.experimentId],
    );
    assert.equal(exp[0]?.queue_status, 'failed', 'a timeout counts as failed (§3.4)');
    const events = (await handle.fetchHistory()).events ?? [];
    const runScheduled = events.find(
      (e) => e.activityTaskScheduledEventAttributes?.activityId === `case-${seeded.runCaseIds[0]}/run`,
    );
    const runStarted = events.find(
      (e) => String(e.activityTaskStartedEventAttributes?.scheduledEventId) === String(runScheduled?.eventId),
    );
    assert.equal(
      runStarted?.activityTaskStartedEventAttributes?.attempt,
      1,
      'a timeout is a result, not a retried failure',
    );
    assert.deepEqual(await managedContainers(stack.docker, [handle.workflowId]), []);
  });

  test('without OTel data the stdout trajectory is used and OTEL_FALLBACK_STDOUT is logged', async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: 1 });
    const { rows } = await run(seeded, {
      agent_image: 'bench/busybox:latest',
      sandbox_start_command: 'sleep infinity',
      case_exec_command: `echo '{"output":"x","trajectory":[{"step":1,"action":"think"},{"step":2,"action":"answer"}]}'`,
    });
    assert.deepEqual(rows[0]?.agent_trajectory, [
      { step: 1, action: 'think' },
      { step: 2, action: 'answer' },
    ]);
    assert.ok(lines.some((l) => l.code === 'OTEL_FALLBACK_STDOUT' && l.run_case_id === seeded.runCaseIds[0]));
  });

  test('a case with a mock_config gets its own gateway; its requests are recorded in artifacts_json', async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: 2 });
    const { rows } = await run(
      seeded,
      {
        agent_image: 'bench/agent-base:bookworm',
        sandbox_start_command: 'sleep infinity',
        case_exec_command: `python3 -c "import json,urllib.request;print(json.dumps({'output':json.load(urllib.request.urlopen('http://api.example.test/v1/ping?api_key=sk-query-SECRET-77&q=1'))}))"`,
      },
      {
        caseExtras: (i) => ({
          mock_config: {
            passthrough: false,
            rules: [
              {
                name: `ping-${i}`,
                match: { methods: ['GET'], path: '/v1/ping' },
                response: { type: 'json', json: { pong: i } },
              },
            ],
          },
        }),
      },
    );
    rows.forEach((row, i) => {
      assert.equal(row.status, 'success', row.error_message ?? '');
      assert.deepEqual(row.agent_output, { pong: i }, 'each case answered by its own rules');
      const recorded = (
        row.artifacts_json.mock_gateway as { requests: Array<{ matched: string; status: number }> }
      ).requests;
      assert.ok(
        recorded.some((r) => r.matched === `ping-${i}` && r.status === 200),
        JSON.stringify(recorded),
      );
      const urls = (row.artifacts_json.mock_gateway as { requests: Array<{ url: string }> }).requests.map(
        (r) => r.url,
      );
      assert.ok(
        urls.includes('http://api.example.test/v1/ping?api_key=[REDACTED]&q=1'),
        JSON.stringify(urls),
      );
      assert.ok(
        !JSON.stringify(row).includes('sk-query-SECRET-77'),
        'the query secret is in no column of the row',
      );
    });
  });

  test('scoring with an LLM judge: scores and final_score persisted; no secret of the message is in a row, log line or Temporal payload', async () => {
    const secret = 'sk-e2e-SECRET-4f1c9a';
    const accessToken = 'tok-e2e-SECRET-90bd';
    // A credential of the agent's own: it must reach the container, sealed in the stored run input.
    const agentToken = 'ghp-e2e-SECRET-7c21';
    const seeded = await seedExperiment(stack.db.pool, { cases: 2, evaluators: 1 });
    const evaluatorId = seeded.evaluatorIds[0] as number;
    const baseUrl = `${judge.origin}/judge/v1/chat/completions`;
    // The platform's evaluators row is where the key lives; the message carries it too.
    await stack.db.pool.query(
      `UPDATE evaluators SET api_key = $2, base_url = $3, model_name = 'judge-model', prompt_template = $4 WHERE id = $1`,
      [evaluatorId, secret, baseUrl, 'Input: {{data_item.input}} Output: {{run.output}}'],
    );
    judge.script(
      '/judge/v1/chat/completions',
      { json: openAiReply('{"score":0.93,"reason":"good"}') },
      { json: openAiReply('{"score":0.7,"reason":"meh"}') },
    );
    const { rows, handle } = await run(
      seeded,
      {
        agent_image: 'bench/busybox:latest',
        sandbox_start_command: 'sleep infinity',
        case_exec_command: `printf '{"answer":"4","token_sha256":"%s"}' "$(printf %s "$AGENT_TOKEN" | sha256sum | cut -c1-64)"`,
        env: { AGENT_TOKEN: agentToken },
      },
      {
        scorers: [
          {
            id: String(evaluatorId),
            scorer_key: 'task_success',
            name: 'Task success',
            scorer_config: {
              prompt_template: 'Input: {{data_item.input}} Output: {{run.output}}',
              base_url: baseUrl,
              model_name: 'judge-model',
              api_style: 'openai',
              api_key: secret,
              access_token: accessToken,
            },
          },
        ],
      },
    );
    assert.equal(judge.requestsTo('/judge/v1/chat/completions').length, 2);
    assert.ok(
      judge.requests.every((r) => r.headers.authorization === `Bearer ${secret}`),
      'the judge got the real key',
    );
    assert.deepEqual(rows.map((r) => r.final_score).sort(), [0.5, 1]);
    const tokenSha = createHash('sha256').update(agentToken).digest('hex');
    for (const row of rows) {
      assert.deepEqual(row.agent_output, { answer: '4', token_sha256: tokenSha }, 'the agent got its token');
    }
    const { rows: scores } = await stack.db.pool.query(
      'SELECT score FROM evaluate_results WHERE run_case_id = ANY($1::bigint[]) ORDER BY score',
      [seeded.runCaseIds],
    );
    assert.deepEqual(
      scores.map((s: { score: number }) => s.score),
      [0.5, 1],
    );

    // Every row of every table except the platform's own evaluators table (the key's home).
    const { rows: tables } = await stack.db.pool.query<{ tablename: string }>(
      `SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'evaluators'`,
    );
    const secrets = { 'api key': secret, access_token: accessToken, 'agent token': agentToken };
    for (const { tablename } of tables) {
      const { rows: dump } = await stack.db.pool.query(`SELECT t::text AS row FROM ${tablename} t`);
      for (const [what, value] of Object.entries(secrets)) {
        assert.ok(!dump.some((d: { row: string }) => d.row.includes(value)), `${what} found in ${tablename}`);
      }
    }
    // Our run input keeps what a worker needs and nothing it does not.
    const { rows: stored } = await stack.db.pool.query<{ request: string }>(
      'SELECT request::text AS request FROM agentbench_run_requests WHERE workflow_id = $1',
      [handle.workflowId],
    );
    assert.match(stored[0]?.request ?? '', /"access_token": "\[REDACTED\]"/);
    assert.match(stored[0]?.request ?? '', /"AGENT_TOKEN": "enc:v1:/);
    const { rows: snapshots } = await stack.db.pool.query<{ snapshot: string }>(
      'SELECT runtime_snapshot_json::text AS snapshot FROM run_cases WHERE id = ANY($1::bigint[])',
      [seeded.runCaseIds],
    );
    assert.equal(snapshots.length, 2);
    for (const { snapshot } of snapshots) assert.match(snapshot, /"access_token": "\[REDACTED\]"/);
    assert.ok(lines.length > 0, 'log lines were captured');
    const history = historyToJSON(await handle.fetchHistory());
    const decoded = [...history.matchAll(/"data":"([A-Za-z0-9+/=]+)"/g)].map((m) =>
      Buffer.from(m[1] ?? '', 'base64').toString('utf8'),
    );
    for (const [what, value] of Object.entries(secrets)) {
      assert.ok(!lines.some((l) => JSON.stringify(l).includes(value)), `${what} in a log line`);
      assert.ok(
        !history.includes(value) && !decoded.some((d) => d.includes(value)),
        `${what} in the workflow history`,
      );
    }
  });
});
