'use strict';
// The web runtime: the task's browser actions (`constraints.actions`, or `constraints.url` as goto +
// extract_text), one `browser_action` step each; the first failed action ends the task with its
// typed error. The final result is the last page text read (goto, click, extract_text).

const rt = require('./task-runtime');
const { BrowserSession } = require('./browser');

const RUNTIME_ID = 'agentbench-web/1';

function actionsOf(task) {
  const c = task.constraints || {};
  if (Array.isArray(c.actions) && c.actions.length > 0) return c.actions;
  const url = c.url || c.start_url;
  return typeof url === 'string' && url ? [{ action: 'goto', url }, { action: 'extract_text' }] : [];
}

async function main() {
  const task = rt.loadTask('web');
  const recorder = new rt.StepRecorder(RUNTIME_ID);
  const actions = actionsOf(task);
  if (actions.length === 0) {
    return rt.finish(
      recorder,
      task,
      false,
      null,
      'invalid_task',
      'a web task needs constraints.actions or constraints.url',
    );
  }
  const c = task.constraints;
  const session = new BrowserSession({
    memoryMb: Number(c.browser_memory_mb) || 512,
    actionTimeoutMs: Number(c.action_timeout_ms) || undefined,
  });
  let lastText = null;
  try {
    for (const params of actions) {
      const started = Date.now();
      try {
        const observation = await session.perform(params);
        if (['goto', 'click', 'extract_text'].includes(params.action)) lastText = observation;
        await recorder.record({
          actionType: 'browser_action',
          actionParams: params,
          started,
          observation,
          success: true,
          toolName: 'browser',
        });
      } catch (err) {
        await recorder.record({
          actionType: 'browser_action',
          actionParams: params,
          started,
          observation: '',
          success: false,
          errorType: err.errorType || 'browser_error',
          errorMessage: err.message,
          toolName: 'browser',
        });
        return rt.finish(recorder, task, false, null, err.errorType || 'browser_error', err.message);
      }
    }
  } finally {
    await session.close();
  }
  return rt.finish(recorder, task, true, lastText);
}

rt.runMain(RUNTIME_ID, 'agentbench-web', main);
