'use strict';
// The reasoning runtime: a tool-calling loop against an OpenAI-compatible chat endpoint
// (LLM_BASE_URL, LLM_MODEL; LLM_API_KEY comes from the worker's secret env, never from the task).
// Tools: `browser` (the web runtime's actions), `python_executor` (the code runtime's executor, in a
// child process with its limits) and `complete_task`; `expected_tools` narrows what the model may
// call. Every model call and every tool call is a `tool_call` step, model calls with their token
// usage. Ends at complete_task (success) or after max_steps model calls (`max_steps_exceeded`).

const { spawn } = require('node:child_process');
const rt = require('./task-runtime');
const { BrowserSession, ACTIONS } = require('./browser');

const RUNTIME_ID = 'agentbench-reasoning/1';
const DEFAULT_MAX_STEPS = 10;
const EXECUTOR = process.env.PYTHON_EXECUTOR || '/runtime/python_executor.py';

const TOOL_SCHEMAS = {
  browser: {
    description:
      'Drive a headless browser: goto a URL, click or type into a CSS selector, extract the text of the page (or a selector), take a screenshot.',
    parameters: {
      type: 'object',
      properties: {
        action: { type: 'string', enum: ACTIONS },
        url: { type: 'string' },
        selector: { type: 'string' },
        text: { type: 'string' },
      },
      required: ['action'],
    },
  },
  python_executor: {
    description: 'Run a Python 3 program and get its stdout and stderr.',
    parameters: { type: 'object', properties: { code: { type: 'string' } }, required: ['code'] },
  },
  complete_task: {
    description: 'Finish the task with its final result.',
    parameters: { type: 'object', properties: { result: { type: 'string' } }, required: ['result'] },
  },
};

function allowedTools(task) {
  const wanted = task.expected_tools.filter((t) => t in TOOL_SCHEMAS && t !== 'complete_task');
  const names = wanted.length > 0 ? wanted : ['browser', 'python_executor'];
  return [...names, 'complete_task'];
}

function runPython(code, timeoutS, memoryMb) {
  return new Promise((resolve) => {
    const child = spawn('python3', [EXECUTOR], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out = [];
    child.stdout.on('data', (c) => out.push(c));
    child.stderr.on('data', () => undefined);
    child.on('close', () => {
      try {
        resolve(JSON.parse(Buffer.concat(out).toString('utf8')));
      } catch {
        resolve({
          success: false,
          stdout: '',
          stderr: '',
          error_type: 'runtime_error',
          error_message: 'the executor returned no result',
        });
      }
    });
    child.stdin.end(JSON.stringify({ code, timeout_s: timeoutS, memory_mb: memoryMb }));
  });
}

function parseArguments(call) {
  const text = call?.function?.arguments;
  if (text && typeof text === 'object') return text;
  try {
    const value = JSON.parse(typeof text === 'string' && text.trim() ? text : '{}');
    return value && typeof value === 'object' ? value : null;
  } catch {
    return null;
  }
}

async function main() {
  const task = rt.loadTask('reasoning');
  const recorder = new rt.StepRecorder(RUNTIME_ID);
  if (!rt.llmConfigured()) {
    return rt.finish(
      recorder,
      task,
      false,
      null,
      'llm_not_configured',
      'the reasoning runtime needs LLM_BASE_URL and LLM_MODEL',
    );
  }
  const c = task.constraints;
  const maxSteps = Number(task.max_steps) || DEFAULT_MAX_STEPS;
  const toolTimeoutS = Number(c.tool_timeout_s) || 10;
  const names = allowedTools(task);
  const tools = names.map((name) => ({ type: 'function', function: { name, ...TOOL_SCHEMAS[name] } }));
  const session = new BrowserSession({ memoryMb: Number(c.browser_memory_mb) || 512 });
  const messages = [
    {
      role: 'system',
      content: `Solve the task with the tools (${names.join(', ')}). Call complete_task with the final result when done.`,
    },
    { role: 'user', content: task.description || '' },
  ];

  const toolStep = (name, args, started, observation, success, errorType, errorMessage) =>
    recorder.record({
      actionType: 'tool_call',
      actionParams: { tool: name, arguments: args },
      started,
      observation,
      success,
      errorType,
      errorMessage,
      toolName: name,
    });

  try {
    for (let turn = 1; turn <= maxSteps; turn++) {
      const started = Date.now();
      let reply;
      try {
        reply = await rt.chat(messages, tools);
      } catch (err) {
        await recorder.record({
          actionType: 'tool_call',
          actionParams: { tool: 'llm', model: process.env.LLM_MODEL, turn },
          started,
          observation: '',
          success: false,
          errorType: err.errorType || 'llm_error',
          errorMessage: err.message,
          toolName: 'llm',
        });
        return rt.finish(recorder, task, false, null, err.errorType || 'llm_error', err.message);
      }
      const { message, usage } = reply;
      const calls = Array.isArray(message.tool_calls) ? message.tool_calls : [];
      await recorder.record({
        actionType: 'tool_call',
        actionParams: { tool: 'llm', model: process.env.LLM_MODEL, turn },
        started,
        observation:
          calls.length > 0
            ? JSON.stringify(
                calls.map((t) => ({ name: t?.function?.name, arguments: t?.function?.arguments })),
              )
            : String(message.content ?? ''),
        success: true,
        usage,
        toolName: 'llm',
      });
      messages.push({
        role: 'assistant',
        content: message.content ?? null,
        ...(calls.length > 0 ? { tool_calls: calls } : {}),
      });
      if (calls.length === 0) {
        messages.push({ role: 'user', content: 'Use a tool, or call complete_task with the final result.' });
        continue;
      }
      for (const call of calls) {
        const name = call?.function?.name;
        const args = parseArguments(call);
        const callStarted = Date.now();
        const answer = (content) =>
          messages.push({ role: 'tool', tool_call_id: call?.id ?? String(turn), content: rt.clip(content) });
        if (!names.includes(name)) {
          const why = `tool ${JSON.stringify(name)} is not allowed; allowed: ${names.join(', ')}`;
          await toolStep(String(name), args, callStarted, '', false, 'tool_not_allowed', why);
          answer(`error: ${why}`);
          continue;
        }
        if (args === null) {
          await toolStep(
            name,
            call?.function?.arguments,
            callStarted,
            '',
            false,
            'invalid_llm_response',
            'tool arguments are not a JSON object',
          );
          answer('error: the arguments were not a JSON object');
          continue;
        }
        if (name === 'complete_task') {
          const result = typeof args.result === 'string' ? args.result : JSON.stringify(args.result ?? null);
          await toolStep(name, args, callStarted, result, true);
          return rt.finish(recorder, task, true, result);
        }
        if (name === 'browser') {
          try {
            const observation = await session.perform(args);
            await toolStep(name, args, callStarted, observation, true);
            answer(observation);
          } catch (err) {
            await toolStep(name, args, callStarted, '', false, err.errorType || 'browser_error', err.message);
            answer(`error (${err.errorType || 'browser_error'}): ${err.message}`);
          }
          continue;
        }
        const result = await runPython(String(args.code ?? ''), toolTimeoutS, Number(c.memory_mb) || 256);
        const observation = result.stdout + (result.stderr ? `\n[stderr]\n${result.stderr}` : '');
        await toolStep(
          name,
          args,
          callStarted,
          observation,
          result.success,
          result.error_type,
          result.error_message,
        );
        answer(
          result.success
            ? observation
            : `error (${result.error_type}): ${result.error_message}\n${observation}`,
        );
      }
    }
  } finally {
    await session.close();
  }
  return rt.finish(
    recorder,
    task,
    false,
    null,
    'max_steps_exceeded',
    `no complete_task within ${maxSteps} model calls`,
  );
}

rt.runMain(RUNTIME_ID, 'agentbench-reasoning', main);
