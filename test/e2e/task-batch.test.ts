import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { TrajectoryFile } from '../../src/batch/trajectory-file';
import type { BatchSummary } from '../../src/batch/trajectory-file';
import { managedContainers, startStack, type Stack } from '../support/stack';
import { startLocalSite, startStubLlm, type LocalServer } from '../support/task-batch-fixtures';

const exec = promisify(execFile);
const BENCHCTL = path.resolve(__dirname, '../../src/cli/benchctl.ts');
const API_KEY = 'sk-test-key-that-must-never-be-stored';
const FILE_KEYS = [
  'created_at',
  'error_message',
  'error_type',
  'final_result',
  'metadata',
  'runtime_id',
  'steps',
  'success',
  'task_id',
  'total_duration',
];
const STEP_KEYS = [
  'action_params',
  'action_type',
  'duration',
  'error_message',
  'error_type',
  'observation',
  'step_id',
  'success',
  'timestamp',
];

function normalTasks(siteUrl: string): object[] {
  const tasks: object[] = [];
  for (const n of [1, 2, 3]) {
    tasks.push({
      task_id: `code-${n}`,
      task_type: 'code',
      description: `square ${n}`,
      constraints: { code: `print(${n} ** 2)` },
    });
    tasks.push({
      task_id: `web-${n}`,
      task_type: 'web',
      description: `read page ${n}`,
      expected_tools: ['browser'],
      constraints: {
        actions: [
          { action: 'goto', url: `${siteUrl}/page/${n}` },
          { action: 'extract_text', selector: '#text' },
        ],
      },
    });
    tasks.push({
      task_id: `reason-${n}`,
      task_type: 'reasoning',
      description: `look up page ${n} and square it`,
      max_steps: 6,
    });
  }
  return tasks;
}

function hostileTasks(siteUrl: string): object[] {
  const forkBomb = 'import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass';
  return [
    {
      task_id: 'fork-bomb',
      task_type: 'code',
      description: 'fork',
      timeout: 4,
      constraints: { code: forkBomb },
    },
    {
      task_id: 'alloc-10g',
      task_type: 'code',
      description: 'allocate',
      constraints: { code: 'x = bytearray(10 * 1024 ** 3)' },
    },
    {
      task_id: 'endless-loop',
      task_type: 'code',
      description: 'loop',
      timeout: 3,
      constraints: { code: 'while True:\n    pass' },
    },
    {
      task_id: 'never-loads',
      task_type: 'web',
      description: 'a page that never loads',
      constraints: { action_timeout_ms: 3000, actions: [{ action: 'goto', url: `${siteUrl}/never` }] },
    },
    {
      task_id: 'llm-garbage',
      task_type: 'reasoning',
      description: 'the model answers garbage',
      max_steps: 3,
    },
    {
      task_id: 'llm-never-completes',
      task_type: 'reasoning',
      description: 'the model will never complete',
      max_steps: 3,
    },
  ];
}

const jsonl = (tasks: object[]) => tasks.map((t) => JSON.stringify(t)).join('\n') + '\n';

describe('benchctl run tasks.jsonl (built-in runtimes, result cache)', () => {
  let stack: Stack;
  let site: LocalServer;
  let llm: LocalServer;
  let dir: string;
  const output: string[] = [];

  before(async () => {
    site = await startLocalSite();
    llm = await startStubLlm(site.url);
    stack = await startStack({
      env: {
        LLM_BASE_URL: `${llm.url}/v1`,
        LLM_MODEL: 'stub-model',
        LLM_API_KEY: API_KEY,
        // The stub LLM and the site run on the host, which cases reach only where the worker opens it.
        SANDBOX_HOST_PORTS: [llm.url, site.url].map((u) => new URL(u).port).join(','),
      },
    });
    dir = await mkdtemp(path.join(tmpdir(), 'agentbench-batch-'));
  });
  after(async () => {
    await stack?.stop();
    await site?.close();
    await llm?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** One batch through the CLI, served by the stack's worker; its summary. */
  async function runBatch(
    name: string,
    tasks: object[],
    extra: string[] = [],
  ): Promise<{ summary: BatchSummary; out: string }> {
    const file = path.join(dir, `${name}.jsonl`);
    await writeFile(file, jsonl(tasks));
    const out = path.join(dir, `${name}-out`);
    const args = [
      '--import',
      'tsx',
      BENCHCTL,
      'run',
      file,
      '--no-worker',
      '--no-report',
      '--concurrency',
      '4',
      '--out',
      out,
      ...extra,
    ];
    const result = await exec(process.execPath, args, { env: { ...process.env, ...stack.env } }).catch(
      (err: { stdout: string; stderr: string; code: number }) => err,
    );
    output.push(result.stdout, result.stderr);
    const summary = JSON.parse(await readFile(path.join(out, 'summary.json'), 'utf8')) as BatchSummary;
    return { summary, out };
  }

  const readTrajectory = async (out: string, taskId: string) =>
    JSON.parse(await readFile(path.join(out, 'trajectories', `${taskId}.json`), 'utf8')) as TrajectoryFile;

  test('9 tasks and 6 hostile ones: documented trajectories, typed errors, no container left; then reuse', async () => {
    const normal = normalTasks(site.url);
    const first = await runBatch('first', [...normal, ...hostileTasks(site.url)]);
    assert.equal(first.summary.counts.total, 15);
    assert.equal(first.summary.counts.succeeded, 9, JSON.stringify(first.summary.tasks));
    assert.deepEqual(first.summary.cache, { hits: 0, misses: 15 });

    for (const n of [1, 2, 3]) {
      const code = await readTrajectory(first.out, `code-${n}`);
      assert.deepEqual(Object.keys(code).sort(), FILE_KEYS);
      assert.equal(code.success, true);
      assert.equal(code.final_result, String(n * n));
      assert.equal(code.runtime_id, 'agentbench-code/1');
      assert.deepEqual(
        code.steps.map((s) => s.action_type),
        ['code_execution'],
      );
      for (const s of code.steps) assert.deepEqual(Object.keys(s).sort(), STEP_KEYS);

      const web = await readTrajectory(first.out, `web-${n}`);
      assert.equal(web.success, true);
      assert.deepEqual(
        web.steps.map((s) => s.action_type),
        ['browser_action', 'browser_action'],
      );
      assert.match(web.steps[0]?.observation ?? '', new RegExp(`Page ${n}\\s+This is page number ${n}\\.`));
      assert.equal(web.final_result, `This is page number ${n}.`);

      const reason = await readTrajectory(first.out, `reason-${n}`);
      assert.equal(reason.success, true, JSON.stringify(reason));
      assert.equal(reason.final_result, `page ${n}: ${n * n}`);
      // Every model call and tool call is a tool_call step, in the stub's scripted order.
      assert.deepEqual(
        reason.steps.map((s) => (s.action_params as { tool: string }).tool),
        ['llm', 'browser', 'llm', 'python_executor', 'llm', 'complete_task'],
      );
      assert.ok(reason.steps.every((s) => s.action_type === 'tool_call'));
      assert.match(reason.steps[1]?.observation ?? '', new RegExp(`This is page number ${n}`));
      assert.equal(reason.steps[3]?.observation.trim(), String(n * n));
      assert.deepEqual(reason.metadata.usage, { input_tokens: 33, output_tokens: 21 });
    }

    const hostile = Object.fromEntries(
      await Promise.all(
        ['fork-bomb', 'alloc-10g', 'endless-loop', 'never-loads', 'llm-garbage', 'llm-never-completes'].map(
          async (id) => [id, await readTrajectory(first.out, id)] as const,
        ),
      ),
    );
    assert.deepEqual(
      Object.fromEntries(Object.entries(hostile).map(([id, t]) => [id, [t.success, t.error_type]])),
      {
        'fork-bomb': [false, 'timeout'],
        'alloc-10g': [false, 'runtime_error'],
        'endless-loop': [false, 'timeout'],
        'never-loads': [false, 'navigation_timeout'],
        'llm-garbage': [false, 'invalid_llm_response'],
        'llm-never-completes': [false, 'max_steps_exceeded'],
      },
    );
    assert.match(hostile['alloc-10g']?.error_message ?? '', /MemoryError/);
    assert.equal(hostile['llm-never-completes']?.steps.length, 3);

    const { rows: runs } = await stack.db.pool.query<{ workflow_id: string }>(
      'SELECT workflow_id FROM agentbench_run_requests',
    );
    const workflowIds = runs.map((r) => r.workflow_id);

    // The same nine tasks again: every one reused, no container started.
    const second = await runBatch('second', normal);
    assert.deepEqual(second.summary.cache, { hits: 9, misses: 0 });
    assert.equal(second.summary.counts.succeeded, 9);
    const reused = await readTrajectory(second.out, 'reason-2');
    assert.equal(reused.metadata.cached, true);
    assert.deepEqual(reused.steps, (await readTrajectory(first.out, 'reason-2')).steps);

    // One description changed: only that task runs.
    const changed = normal.map((t) =>
      (t as { task_id: string }).task_id === 'code-2' ? { ...t, description: 'square two, again' } : t,
    );
    const third = await runBatch('third', changed);
    assert.deepEqual(third.summary.cache, { hits: 8, misses: 1 });
    assert.deepEqual(
      third.summary.tasks.filter((t) => !t.cached).map((t) => t.task_id),
      ['code-2'],
    );

    // --no-cache runs everything again.
    const forced = await runBatch('forced', normal.slice(0, 3), ['--no-cache']);
    assert.deepEqual(forced.summary.cache, { hits: 0, misses: 3 });

    const { rows: all } = await stack.db.pool.query<{ workflow_id: string }>(
      'SELECT workflow_id FROM agentbench_run_requests',
    );
    workflowIds.push(...all.map((r) => r.workflow_id));
    // No container started for a reused result; none left by any run.
    const { rows: containers } = await stack.db.pool.query<{ cached: boolean; container: string | null }>(
      `SELECT (r.result->'resultCache'->'reusedFrom') IS NOT NULL AS cached, r.result->>'containerName' AS container
         FROM agentbench_case_results r`,
    );
    assert.equal(containers.filter((c) => c.cached).length, 17);
    assert.ok(containers.filter((c) => c.cached).every((c) => c.container === null));
    assert.deepEqual(await managedContainers(stack.docker, workflowIds), []);
    const { rows: artifacts } = await stack.db.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM run_cases WHERE artifacts_json->>'cached' = 'true'`,
    );
    assert.equal(artifacts[0]?.n, 17);

    // The model's key reached the runtimes (the stub saw it) and nothing else.
    const { rows: leaks } = await stack.db.pool.query<{ n: number }>(
      `SELECT (SELECT count(*) FROM run_cases WHERE concat(logs, agent_output::text, agent_trajectory::text, runtime_snapshot_json::text) LIKE $1)
            + (SELECT count(*) FROM agentbench_run_requests WHERE request::text LIKE $1)
            + (SELECT count(*) FROM agentbench_case_results WHERE result::text LIKE $1)
            + (SELECT count(*) FROM agentbench_result_cache WHERE result::text LIKE $1)
            + (SELECT count(*) FROM otel_traces WHERE raw::text LIKE $1) AS n`,
      [`%${API_KEY}%`],
    );
    assert.equal(Number(leaks[0]?.n), 0);
    assert.ok(!output.join('\n').includes(API_KEY));
  });

  test('a bad line fails the batch with its line number; --skip-invalid runs the rest', async () => {
    const file = path.join(dir, 'bad.jsonl');
    await writeFile(
      file,
      `${JSON.stringify({ task_id: 'ok', task_type: 'code', description: 'x', constraints: { code: 'print(1)' } })}\n{"task_id": "b", "task_type": "video"}\n`,
    );
    const failed = await exec(
      process.execPath,
      ['--import', 'tsx', BENCHCTL, 'run', file, '--no-worker', '--out', path.join(dir, 'bad-out')],
      {
        env: { ...process.env, ...stack.env },
      },
    ).catch((err: { code: number; stderr: string }) => err);
    assert.equal((failed as { code: number }).code, 2);
    assert.match((failed as { stderr: string }).stderr, /bad\.jsonl:2: task_type:/);
    const { rows } = await stack.db.pool.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM experiments WHERE name LIKE 'tasks bad.jsonl%'",
    );
    assert.equal(rows[0]?.n, 0);
    const out = path.join(dir, 'skip-out');
    const skipped = await exec(
      process.execPath,
      [
        '--import',
        'tsx',
        BENCHCTL,
        'run',
        file,
        '--no-worker',
        '--no-report',
        '--skip-invalid',
        '--out',
        out,
      ],
      {
        env: { ...process.env, ...stack.env },
      },
    );
    assert.match(skipped.stderr, /bad\.jsonl:2: task_type: .*\(skipped\)/);
    const summary = JSON.parse(await readFile(path.join(out, 'summary.json'), 'utf8')) as BatchSummary;
    assert.equal(summary.counts.total, 1);
    assert.equal(summary.counts.invalid_lines, 1);
  });
});
