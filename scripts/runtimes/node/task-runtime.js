'use strict';
// What the web and reasoning runtimes share, as ../python/task_runtime.py does for Python: the task
// from /benchmark/case.json, one OpenTelemetry span per step (OTLP/HTTP JSON to the endpoint the
// worker injects as OTEL_*; posted when the step ends, so a runtime killed mid-task keeps its
// steps), the OpenAI-compatible chat call, and the one output line the orchestrator reads.
// Node's standard library only (plus playwright-core in browser.js).

const { randomBytes } = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const net = require('node:net');
const tls = require('node:tls');

const CASE_FILE = process.env.BENCHMARK_CASE_FILE || '/benchmark/case.json';
const OBSERVATION_LIMIT = 8000;
const EXPORT_TIMEOUT_MS = 5000;

function loadTask(taskType) {
  const kase = JSON.parse(fs.readFileSync(CASE_FILE, 'utf8'));
  const task =
    kase.task && typeof kase.task === 'object'
      ? kase.task
      : {
          task_id: String(kase.run_case_id ?? 'case'),
          task_type: taskType,
          description: kase.user_input ?? '',
          constraints:
            kase.reference_output && typeof kase.reference_output === 'object' ? kase.reference_output : {},
        };
  task.constraints = task.constraints || {};
  task.expected_tools = Array.isArray(task.expected_tools) ? task.expected_tools : [];
  return task;
}

function clip(value, limit = OBSERVATION_LIMIT) {
  const text = typeof value === 'string' ? value : JSON.stringify(value ?? null);
  return text.length <= limit ? text : `${text.slice(0, limit)}... [${text.length - limit} more characters]`;
}

function otlpValue(v) {
  if (typeof v === 'boolean') return { boolValue: v };
  if (Number.isInteger(v)) return { intValue: String(v) };
  if (typeof v === 'number') return { doubleValue: v };
  return { stringValue: typeof v === 'string' ? v : JSON.stringify(v) };
}

function otlpAttributes(attrs) {
  return Object.entries(attrs)
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([key, v]) => ({ key, value: otlpValue(v) }));
}

/** OTEL_EXPORTER_OTLP_HEADERS / OTEL_RESOURCE_ATTRIBUTES: `k=v,k2=v2`, URL-encoded. */
function parseKvList(text) {
  const pairs = {};
  for (const item of (text || '').split(',')) {
    const at = item.indexOf('=');
    if (at > 0)
      pairs[decodeURIComponent(item.slice(0, at).trim())] = decodeURIComponent(item.slice(at + 1).trim());
  }
  return pairs;
}

function isoTime(ms) {
  return new Date(ms).toISOString();
}

class StepRecorder {
  constructor(runtimeId) {
    this.runtimeId = runtimeId;
    this.traceId = randomBytes(16).toString('hex');
    this.steps = [];
    this.usage = { input_tokens: 0, output_tokens: 0 };
    const base =
      process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ||
      `${(process.env.OTEL_EXPORTER_OTLP_ENDPOINT || '').replace(/\/+$/, '')}/v1/traces`;
    this.endpoint = base.startsWith('http') ? base : null;
    this.headers = {
      'Content-Type': 'application/json',
      ...parseKvList(process.env.OTEL_EXPORTER_OTLP_HEADERS),
    };
    this.resource = {
      ...parseKvList(process.env.OTEL_RESOURCE_ATTRIBUTES),
      'service.name': process.env.OTEL_SERVICE_NAME || runtimeId,
      'agentbench.runtime_id': runtimeId,
    };
  }

  /** `started` = Date.now() at the step's start; the step ends now. */
  async record({
    actionType,
    actionParams,
    started,
    observation,
    success,
    errorType,
    errorMessage,
    usage,
    toolName,
  }) {
    const ended = Date.now();
    const step = {
      step_id: this.steps.length + 1,
      action_type: actionType,
      action_params: actionParams,
      observation: clip(observation ?? ''),
      success: Boolean(success),
      error_type: errorType ?? null,
      error_message: errorMessage ? clip(errorMessage, 2000) : null,
      timestamp: isoTime(started),
      duration: (ended - started) / 1000,
    };
    if (usage) {
      step.usage = usage;
      this.usage.input_tokens += usage.input_tokens || 0;
      this.usage.output_tokens += usage.output_tokens || 0;
    }
    this.steps.push(step);
    await this.export(step, started, ended, toolName);
    return step;
  }

  async export(step, started, ended, toolName) {
    if (!this.endpoint) return;
    // The step's own fields travel as the attributes of one span event; time and usage are the span's.
    const event = {};
    for (const key of ['step_id', 'action_type', 'observation', 'success', 'error_type', 'error_message'])
      event[key] = step[key];
    event.action_params = JSON.stringify(step.action_params ?? null);
    const attrs = { 'agentbench.step.action_type': step.action_type, 'tool.name': toolName ?? null };
    if (step.usage) {
      attrs['gen_ai.usage.input_tokens'] = step.usage.input_tokens || 0;
      attrs['gen_ai.usage.output_tokens'] = step.usage.output_tokens || 0;
    }
    const nanos = (ms) => `${BigInt(Math.round(ms)) * 1_000_000n}`;
    const span = {
      traceId: this.traceId,
      spanId: randomBytes(8).toString('hex'),
      name: step.action_type,
      kind: 1,
      startTimeUnixNano: nanos(started),
      endTimeUnixNano: nanos(ended),
      attributes: otlpAttributes(attrs),
      events: [{ name: 'agentbench.step', timeUnixNano: nanos(ended), attributes: otlpAttributes(event) }],
      status: { code: step.success ? 1 : 2, message: step.error_message || '' },
    };
    const body = {
      resourceSpans: [
        {
          resource: { attributes: otlpAttributes(this.resource) },
          scopeSpans: [{ scope: { name: 'agentbench.runtime', version: '1' }, spans: [span] }],
        },
      ],
    };
    try {
      await postJson(this.endpoint, body, this.headers, EXPORT_TIMEOUT_MS);
    } catch (err) {
      process.stderr.write(`agentbench-runtime: span export failed: ${err.message}\n`);
    }
  }
}

/**
 * Prints the output line; exits 1 when the task failed, so its case is `failed` (and a
 * `rerun --failed` runs it again) while the line still carries the typed error.
 */
function finish(recorder, task, success, finalResult, errorType = null, errorMessage = null) {
  const output = {
    task_id: task.task_id ?? null,
    runtime_id: recorder.runtimeId,
    success: Boolean(success),
    final_result: finalResult ?? null,
    error_type: errorType,
    error_message: errorMessage,
  };
  const line = JSON.stringify({ output, trajectory: recorder.steps, usage: recorder.usage });
  process.stdout.write(`\n${line}\n`, () => process.exit(success ? 0 : 1));
}

function noProxy(hostname) {
  const list = (process.env.NO_PROXY || process.env.no_proxy || '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return list.some(
    (entry) => entry === '*' || hostname === entry || hostname.endsWith(`.${entry.replace(/^\./, '')}`),
  );
}

/**
 * POSTs JSON and parses the answer; honours HTTP(S)_PROXY / NO_PROXY like curl (Node's fetch does
 * not), so a case behind a mock gateway reaches its endpoints the same way its other clients do.
 */
function postJson(url, body, headers, timeoutMs) {
  const target = new URL(url);
  const secure = target.protocol === 'https:';
  const proxyText = secure
    ? process.env.HTTPS_PROXY || process.env.https_proxy
    : process.env.HTTP_PROXY || process.env.http_proxy;
  const proxy = proxyText && !noProxy(target.hostname) ? new URL(proxyText) : null;
  const payload = Buffer.from(JSON.stringify(body));
  const allHeaders = { ...headers, 'Content-Length': payload.length, Host: target.host };
  return new Promise((resolve, reject) => {
    const deadline = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    const done = (fn) => (value) => {
      clearTimeout(deadline);
      fn(value);
    };
    const onResponse = (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on(
        'end',
        done(() => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') })),
      );
      res.on('error', done(reject));
    };
    const port = Number(target.port) || (secure ? 443 : 80);
    let req;
    if (proxy && !secure) {
      req = http.request(
        {
          host: proxy.hostname,
          port: Number(proxy.port) || 80,
          method: 'POST',
          path: target.href,
          headers: allHeaders,
        },
        onResponse,
      );
    } else if (proxy && secure) {
      req = https.request(
        {
          method: 'POST',
          host: target.hostname,
          port,
          path: target.pathname + target.search,
          headers: allHeaders,
          createConnection: (_opts, cb) => {
            const tunnel = net.connect(Number(proxy.port) || 80, proxy.hostname, () =>
              tunnel.write(
                `CONNECT ${target.hostname}:${port} HTTP/1.1\r\nHost: ${target.hostname}:${port}\r\n\r\n`,
              ),
            );
            tunnel.once('data', (chunk) => {
              if (!/^HTTP\/1\.[01] 200/.test(chunk.toString('latin1')))
                return cb(new Error('proxy refused CONNECT'));
              cb(null, tls.connect({ socket: tunnel, servername: target.hostname }));
            });
            tunnel.on('error', cb);
          },
        },
        onResponse,
      );
    } else {
      req = (secure ? https : http).request(target, { method: 'POST', headers: allHeaders }, onResponse);
    }
    req.on('error', done(reject));
    req.end(payload);
  });
}

class LlmError extends Error {
  constructor(errorType, message) {
    super(message);
    this.errorType = errorType;
  }
}

function llmConfigured() {
  return Boolean(process.env.LLM_BASE_URL && process.env.LLM_MODEL);
}

/** One chat-completions call → { message, usage }; every failure is an LlmError with a type. */
async function chat(messages, tools, timeoutMs = 60_000) {
  const url = `${process.env.LLM_BASE_URL.replace(/\/+$/, '')}/chat/completions`;
  const headers = { 'Content-Type': 'application/json' };
  if (process.env.LLM_API_KEY) headers.Authorization = `Bearer ${process.env.LLM_API_KEY}`;
  const body = { model: process.env.LLM_MODEL, messages };
  if (tools && tools.length > 0) body.tools = tools;
  let res;
  try {
    res = await postJson(url, body, headers, timeoutMs);
  } catch (err) {
    throw new LlmError('llm_error', `model endpoint unreachable: ${err.message}`);
  }
  if (res.status < 200 || res.status >= 300)
    throw new LlmError('llm_error', `HTTP ${res.status} from the model endpoint`);
  let data;
  try {
    data = JSON.parse(res.text);
  } catch {
    throw new LlmError('invalid_llm_response', `not JSON: ${clip(res.text, 300)}`);
  }
  const message = data?.choices?.[0]?.message;
  if (!message || typeof message !== 'object') {
    throw new LlmError('invalid_llm_response', `not a chat completion: ${clip(res.text, 300)}`);
  }
  const u = data.usage && typeof data.usage === 'object' ? data.usage : {};
  return {
    message,
    usage: {
      input_tokens: Number(u.prompt_tokens ?? u.input_tokens ?? 0) || 0,
      output_tokens: Number(u.completion_tokens ?? u.output_tokens ?? 0) || 0,
    },
  };
}

/** Runs a runtime's main; a crash of the runtime itself still ends in one typed output line. */
function runMain(runtimeId, name, main) {
  main().catch((err) => {
    process.stderr.write(`${name}: ${err && err.stack ? err.stack : err}\n`);
    finish(
      new StepRecorder(runtimeId),
      { task_id: null },
      false,
      null,
      'runtime_crash',
      String(err && err.message),
    );
  });
}

module.exports = { runMain, loadTask, clip, StepRecorder, finish, chat, llmConfigured, LlmError };
