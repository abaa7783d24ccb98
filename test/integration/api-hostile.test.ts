import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { READ_TOKEN, startTestApi, WRITE_TOKEN, type TestApi } from '../support/api';
import { seedExperiment } from '../support/database';
import { startStack, type Stack } from '../support/stack';

interface Hostile {
  name: string;
  method: string;
  path: string;
  /** undefined: no Authorization header; else the header's whole value. */
  authorization?: string;
  contentType?: string;
  body?: string | Buffer;
  headers?: Record<string, string>;
}

const bearer = (t: string) => `Bearer ${t}`;
const W = bearer(WRITE_TOKEN);
const validItem = { user_input: 'q' };
const validAgent = {
  name: 'a',
  agent_key: 'k',
  runtime_spec_json: { agent_image: 'x', case_exec_command: 'true' },
};
const file = (over: Record<string, unknown>) =>
  JSON.stringify({ dataset: { name: 'd', items: [validItem] }, agent: validAgent, ...over });

/** 200 requests an attacker, a fuzzer or a careless client would send. None may start anything. */
function hostileRequests(seededExperimentId: number): Hostile[] {
  const list: Hostile[] = [];
  const post = (name: string, body: string | Buffer, extra: Partial<Hostile> = {}) =>
    list.push({
      name,
      method: 'POST',
      path: '/v1/runs',
      authorization: W,
      contentType: 'application/json',
      body,
      ...extra,
    });

  // Not JSON.
  const badJson = [
    '{',
    '{"experiment_id":',
    'nul',
    '[1,2',
    '{"dataset":}',
    "{'a':1}",
    '{"a":1,}',
    '{"a" 1}',
    'undefined',
    'NaN',
    '{"a":"\\x"}',
    '\u0000',
    '{"a":1}}',
    '"unterminated',
    '{"a":[1,2,}',
    '\\',
    '{"a":1',
    '{"a":tru}',
    '{"a":01}',
    '{"a":.5}',
    '{"a":"\\u12"}',
    '\ufeff{"experiment_id":1}',
    '{"__proto__":{"polluted":true}}',
    '{"constructor":{"prototype":{"polluted":true}}}',
    '['.repeat(50_000) + ']'.repeat(50_000),
    '{"a":'.repeat(20_000) + '1' + '}'.repeat(20_000),
  ];
  badJson.forEach((b, i) => post(`bad json ${i}`, b));
  post('random bytes', Buffer.from(Array.from({ length: 512 }, (_, i) => (i * 7919) % 256)));
  post('empty body with a JSON type', '');
  // Valid JSON of the wrong shape.
  const wrong: Array<[string, string]> = [
    ['null', 'null'],
    ['number', '42'],
    ['string', '"run"'],
    ['array', '[]'],
    ['array of bodies', `[${file({})}]`],
    ['empty object', '{}'],
    ['experiment_id string', '{"experiment_id":"1"}'],
    ['experiment_id float', '{"experiment_id":1.5}'],
    ['experiment_id negative', '{"experiment_id":-3}'],
    ['experiment_id zero', '{"experiment_id":0}'],
    ['experiment_id huge', '{"experiment_id":1e308}'],
    ['experiment_id null', '{"experiment_id":null}'],
    ['experiment_id bool', '{"experiment_id":true}'],
    ['experiment_id object', '{"experiment_id":{"$gt":0}}'],
    ['experiment_id with extras', `{"experiment_id":${seededExperimentId},"drop":"table"}`],
    ['items empty', file({ dataset: { name: 'd', items: [] } })],
    ['items object', file({ dataset: { name: 'd', items: { a: 1 } } })],
    ['items of numbers', file({ dataset: { name: 'd', items: [1, 2] } })],
    ['user_input number', file({ dataset: { name: 'd', items: [{ user_input: 5 }] } })],
    ['user_input missing', file({ dataset: { name: 'd', items: [{}] } })],
    ['dataset name empty', file({ dataset: { name: '', items: [validItem] } })],
    ['dataset missing', JSON.stringify({ agent: validAgent })],
    ['dataset string', file({ dataset: 'd' })],
    ['agent missing', JSON.stringify({ dataset: { name: 'd', items: [validItem] } })],
    ['agent null', file({ agent: null })],
    ['agent_key empty', file({ agent: { ...validAgent, agent_key: '' } })],
    ['agent name number', file({ agent: { ...validAgent, name: 1 } })],
    ['runtime spec array', file({ agent: { ...validAgent, runtime_spec_json: [] } })],
    ['runtime spec string', file({ agent: { ...validAgent, runtime_spec_json: 'x' } })],
    ['evaluators object', file({ evaluators: {} })],
    ['evaluator without key', file({ evaluators: [{ name: 'n', prompt_template: 'p' }] })],
    ['evaluator key number', file({ evaluators: [{ evaluator_key: 1, name: 'n', prompt_template: 'p' }] })],
    ['name empty', file({ name: '' })],
    ['name object', file({ name: {} })],
    ['triggered_by empty', file({ triggered_by: '' })],
    ['triggered_by huge', file({ triggered_by: 'x'.repeat(10_000) })],
    ['mock_config string', file({ dataset: { name: 'd', items: [{ user_input: 'q', mock_config: 'x' }] } })],
    [
      'session_jsonl number',
      file({ dataset: { name: 'd', items: [{ user_input: 'q', session_jsonl: 3 }] } }),
    ],
    ['version empty', file({ agent: { ...validAgent, version: '' } })],
    [
      'both shapes at once',
      JSON.stringify({ experiment_id: seededExperimentId, dataset: { name: 'd', items: [validItem] } }),
    ],
  ];
  for (const [name, body] of wrong) post(`wrong shape: ${name}`, body);
  // Too large (API_MAX_BODY_BYTES is 1 MiB here).
  const big = 'x'.repeat(1_100_000);
  post('huge string body', JSON.stringify({ name: big }));
  post(
    'huge items',
    JSON.stringify({
      dataset: { name: 'd', items: Array.from({ length: 60_000 }, () => validItem) },
      agent: validAgent,
    }),
  );
  post('huge garbage', Buffer.alloc(2_000_000, 0x61));
  post('huge unauthenticated', Buffer.alloc(2_000_000, 0x7b), { authorization: undefined });
  post('huge with bad token', Buffer.alloc(2_000_000, 0x7b), {
    authorization: bearer('nope-nope-nope-nope'),
  });
  // Content types.
  post('text/plain', file({}), { contentType: 'text/plain' });
  post('form', 'experiment_id=1', { contentType: 'application/x-www-form-urlencoded' });
  post('multipart', '--x\r\n\r\n--x--', { contentType: 'multipart/form-data; boundary=x' });
  post('xml', '<run/>', { contentType: 'application/xml' });
  post('octet stream', Buffer.from('{}'), { contentType: 'application/octet-stream' });
  post('json with a bogus charset', file({}), { contentType: 'application/json; charset=ebcdic' });
  // Authentication and authorisation.
  const tokens: Array<[string, string | undefined]> = [
    ['no header', undefined],
    ['empty', ''],
    ['Bearer only', 'Bearer'],
    ['Bearer space', 'Bearer '],
    ['wrong scheme', `Basic ${Buffer.from('a:b').toString('base64')}`],
    ['lower-case scheme', `bearer ${WRITE_TOKEN}`],
    ['unknown token', bearer('this-is-not-a-token-at-all')],
    ['truncated token', bearer(WRITE_TOKEN.slice(0, -1))],
    ['longer token', bearer(`${WRITE_TOKEN}x`)],
    ['token with spaces', `Bearer ${WRITE_TOKEN} extra`],
    ['huge token', bearer('t'.repeat(6000))],
    ['the digest instead of the token', bearer('sha256:' + '0'.repeat(64))],
    ['two tokens', `Bearer ${WRITE_TOKEN}, Bearer ${WRITE_TOKEN}`],
    ['control characters', 'Bearer \tabc'],
  ];
  for (const [name, authorization] of tokens) {
    for (const [method, path, body] of [
      ['POST', '/v1/runs', file({})],
      ['GET', '/v1/runs', undefined],
      ['GET', '/v1/runs/experiment-1-x/events', undefined],
      ['POST', `/v1/experiments/${seededExperimentId}/retry-failed`, undefined],
    ] as const) {
      list.push({
        name: `auth ${name}: ${method} ${path}`,
        method,
        path,
        authorization,
        contentType: body ? 'application/json' : undefined,
        body,
      });
    }
  }
  for (const [method, path] of [
    ['POST', '/v1/runs'],
    ['POST', '/v1/runs/experiment-1-x/cancel'],
    ['POST', `/v1/experiments/${seededExperimentId}/retry-failed`],
  ] as const) {
    list.push({
      name: `read-only token: ${method} ${path}`,
      method,
      path,
      authorization: bearer(READ_TOKEN),
      contentType: 'application/json',
      body: file({}),
    });
  }
  // Unknown routes and methods.
  const routes: Array<[string, string]> = [
    ['GET', '/'],
    ['GET', '/v2/runs'],
    ['GET', '/v1'],
    ['GET', '/v1/run'],
    ['GET', '/v1/runs/x/y/z'],
    ['GET', '/v1/experiments'],
    ['GET', '/admin'],
    ['GET', '/.env'],
    ['GET', '/../../etc/passwd'],
    ['GET', '/v1/runs/..%2f..%2fetc%2fpasswd'],
    ['GET', '/%00'],
    ['GET', `/v1/${'a'.repeat(5000)}`],
    ['PUT', '/v1/runs'],
    ['DELETE', '/v1/runs'],
    ['PATCH', '/v1/runs'],
    ['DELETE', '/v1/runs/experiment-1-x'],
    ['PUT', '/v1/runs/experiment-1-x/cancel'],
    ['GET', '/v1/runs/experiment-1-x/cancel'],
    ['GET', `/v1/experiments/${seededExperimentId}/retry-failed`],
    ['POST', '/healthz'],
    ['POST', '/metrics'],
    ['TRACE', '/v1/runs'],
  ];
  for (const [method, path] of routes)
    list.push({ name: `route ${method} ${path.slice(0, 40)}`, method, path, authorization: W });
  // Bad parameters, queries and headers on real routes.
  const queries = [
    '/v1/runs?limit=0',
    '/v1/runs?limit=101',
    '/v1/runs?limit=abc',
    '/v1/runs?limit=-1',
    '/v1/runs?limit=1e3',
    '/v1/runs?experiment_id=abc',
    '/v1/runs?experiment_id=-1',
    '/v1/runs?experiment_id=0',
    '/v1/runs?cursor=garbage',
    '/v1/runs?cursor=' + Buffer.from('{"c":"yesterday","w":1}').toString('base64url'),
    `/v1/runs?cursor=${'A'.repeat(600)}`,
    '/v1/runs/experiment-1-does-not-exist',
    '/v1/runs/experiment-1-does-not-exist/cases',
    '/v1/runs/experiment-1-does-not-exist/events',
    '/v1/runs/bad%20id',
    '/v1/runs/bad%22id',
    '/v1/runs/' + 'x'.repeat(301),
    '/v1/runs/%E2%80%AE',
    '/v1/runs/experiment-1-x/cases?limit=0',
    '/v1/runs/experiment-1-x/cases?limit=500',
    '/v1/runs/experiment-1-x/cases?cursor=-1',
    '/v1/runs/experiment-1-x/cases?cursor=abc',
    '/v1/runs/experiment-1-x/cases?status=weird',
  ];
  for (const q of queries)
    list.push({ name: `query ${q.slice(0, 60)}`, method: 'GET', path: q, authorization: W });
  for (const [name, path] of [
    ['experiment id not a number', '/v1/experiments/abc/retry-failed'],
    ['experiment id negative', '/v1/experiments/-5/retry-failed'],
    ['experiment id float', '/v1/experiments/1.5/retry-failed'],
    ['experiment id unknown', '/v1/experiments/999999999999/retry-failed'],
    ['cancel unknown run', '/v1/runs/experiment-1-does-not-exist/cancel'],
  ] as const) {
    list.push({ name, method: 'POST', path, authorization: W });
  }
  // Well-formed, but refused by the state of the experiment (it is done, nothing failed).
  post('a done experiment by id', JSON.stringify({ experiment_id: seededExperimentId }));
  list.push({
    name: 'retry-failed with nothing failed',
    method: 'POST',
    path: `/v1/experiments/${seededExperimentId}/retry-failed`,
    authorization: W,
  });
  for (const [name, key] of [
    ['idempotency key too long', 'k'.repeat(300)],
    ['idempotency key with spaces', 'a key'],
    ['idempotency key non-ASCII', 'kéy'],
    ['idempotency key empty', ''],
    ['idempotency key with a header injection', 'k\r\nx-injected: 1'],
  ] as const) {
    list.push({
      name,
      method: 'POST',
      path: '/v1/runs',
      authorization: W,
      contentType: 'application/json',
      body: '{}',
      headers: { 'idempotency-key': key },
    });
  }
  return list;
}

/** Sends one request over a fresh socket, byte for byte, and returns status and body. */
function rawRequest(port: number, r: Hostile): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const body =
      r.body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(r.body) ? r.body : Buffer.from(r.body, 'utf8');
    const head = [
      `${r.method} ${r.path} HTTP/1.1`,
      'host: 127.0.0.1',
      'connection: close',
      ...(r.authorization !== undefined ? [`authorization: ${r.authorization}`] : []),
      ...(r.contentType ? [`content-type: ${r.contentType}`] : []),
      ...(r.body !== undefined ? [`content-length: ${body.length}`] : []),
      ...Object.entries(r.headers ?? {}).map(([k, v]) => `${k}: ${v}`),
    ].join('\r\n');
    const chunks: Buffer[] = [];
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // The server may answer and close before the rest of a huge body is written.
      if (err.code === 'EPIPE' || err.code === 'ECONNRESET') return;
      reject(err);
    });
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      if (!m) return reject(new Error(`${r.name}: no HTTP answer: ${JSON.stringify(text.slice(0, 200))}`));
      const split = text.indexOf('\r\n\r\n');
      let payload = split >= 0 ? text.slice(split + 4) : '';
      if (/transfer-encoding: chunked/i.test(text.slice(0, split))) payload = dechunk(payload);
      resolve({ status: Number(m[1]), body: Buffer.from(payload, 'latin1').toString('utf8') });
    });
    socket.write(`${head}\r\n\r\n`);
    if (body.length > 0) socket.write(body);
  });
}

function dechunk(s: string): string {
  let out = '';
  let rest = s;
  for (;;) {
    const eol = rest.indexOf('\r\n');
    if (eol < 0) return out;
    const size = parseInt(rest.slice(0, eol), 16);
    if (!size) return out;
    out += rest.slice(eol + 2, eol + 2 + size);
    rest = rest.slice(eol + 2 + size + 2);
  }
}

describe('200 hostile requests', () => {
  let stack: Stack;
  let api: TestApi;
  before(async () => {
    stack = await startStack({ worker: false });
    api = await startTestApi(stack, { API_MAX_BODY_BYTES: String(1024 * 1024) });
  });
  after(async () => {
    await api?.stop();
    await stack?.stop();
  });

  test('every one answered 4xx with an E_ code and no stack trace; the server keeps serving; nothing started', async () => {
    const seeded = await seedExperiment(stack.db.pool, { cases: 1, queueStatus: 'done' });
    const count = async () => {
      const { rows } = await stack.db.pool.query<{
        runs: number;
        experiments: number;
        cases: number;
        keys: number;
      }>(
        `SELECT (SELECT count(*) FROM agentbench_run_requests)::int AS runs, (SELECT count(*) FROM experiments)::int AS experiments,
                (SELECT count(*) FROM run_cases)::int AS cases, (SELECT count(*) FROM agentbench_api_idempotency)::int AS keys`,
      );
      return rows[0];
    };
    const before = await count();
    const requests = hostileRequests(seeded.experimentId);
    // Plus requests that are not HTTP at all.
    const port = Number(new URL(api.baseUrl).port);
    const broken = [
      'GARBAGE\r\n\r\n',
      'GET / HTTP/9.9\r\n\r\n',
      'GET /v1/runs HTTP/1.1\r\nhost: x\r\nbad header line\r\n\r\n',
      `GET /v1/runs HTTP/1.1\r\nx: ${'a'.repeat(20_000)}\r\n\r\n`,
      'POST /v1/runs HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n',
      'POST /v1/runs HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n',
    ];
    const answers: Array<{ name: string; status: number; body: string }> = [];
    for (const r of requests) answers.push({ name: r.name, ...(await rawRequest(port, r)) });
    for (const b of broken) {
      answers.push({
        name: `not HTTP: ${JSON.stringify(b.slice(0, 30))}`,
        ...(await new Promise<{ status: number; body: string }>((resolve, reject) => {
          const socket = net.connect(port, '127.0.0.1');
          const chunks: Buffer[] = [];
          socket.on('data', (d: Buffer) => chunks.push(d));
          socket.on('error', reject);
          socket.on('close', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            resolve({
              status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0),
              body: text.slice(text.indexOf('\r\n\r\n') + 4),
            });
          });
          socket.end(b);
        })),
      });
    }
    assert.ok(answers.length >= 200, `${answers.length} answers`);
    const failures: string[] = [];
    for (const a of answers) {
      let code: unknown;
      try {
        code = (JSON.parse(a.body) as { error?: { code?: unknown } }).error?.code;
      } catch {
        code = undefined;
      }
      if (a.status < 400 || a.status > 499) failures.push(`${a.name}: status ${a.status}`);
      if (typeof code !== 'string' || !/^E_[A-Z0-9_]+$/.test(code))
        failures.push(`${a.name}: no code in ${a.body.slice(0, 120)}`);
      if (/\n\s+at |node_modules|\.ts:\d+/.test(a.body)) failures.push(`${a.name}: looks like a stack trace`);
    }
    assert.deepEqual(failures, []);
    // A spread of statuses, each for its reason.
    const statuses = new Set(answers.map((a) => a.status));
    for (const s of [400, 401, 403, 404, 409, 413, 415])
      assert.ok(statuses.has(s), `some answer was ${s}: ${[...statuses].join(',')}`);

    assert.deepEqual(await count(), before, 'nothing was dispatched or stored');
    const health = await api.call('GET', '/healthz', { token: null });
    assert.equal(health.status, 200);
    const list = await api.call('GET', '/v1/runs');
    assert.equal(list.status, 200);
  });
});
