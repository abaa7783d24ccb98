import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { createLogger } from '../../src/logger';
import {
  PythonHandlerError,
  PythonHandlerPool,
  type PythonHandlerRequest,
} from '../../src/mock-gateway/python-handler-pool';

const log = createLogger({ level: 'silent' });

const REQUEST: PythonHandlerRequest = {
  method: 'POST',
  url: 'http://api.test:8080/v1/echo?name=codex&blank=&name=again',
  headers: [
    ['Host', 'api.test:8080'],
    ['X-Trace', 'first'],
    ['X-Trace', 'last'],
    ['Content-Type', 'application/octet-stream'],
  ],
  body: Buffer.from([0x68, 0xc3, 0xa9, 0xff]),
};

async function rejectsWith(
  promise: Promise<unknown>,
  code: string,
  detail?: RegExp,
): Promise<PythonHandlerError> {
  const err = await promise.then(
    () => assert.fail(`expected ${code}`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof PythonHandlerError, String(err));
  assert.equal(err.code, code, err.message);
  if (detail) assert.match(err.message, detail);
  return err;
}

function json(buffer: Buffer): unknown {
  return JSON.parse(buffer.toString('utf8'));
}

describe('PythonHandlerPool (real python3)', () => {
  const pools: PythonHandlerPool[] = [];
  function pool(
    options: Partial<ConstructorParameters<typeof PythonHandlerPool>[0]> = {},
  ): PythonHandlerPool {
    const created = new PythonHandlerPool({ log, ...options });
    pools.push(created);
    return created;
  }

  after(async () => {
    await Promise.all(pools.map((p) => p.close()));
  });

  test('handle(request) gets the §2.5 request dict', async () => {
    const result = await pool().run('def handle(request):\n    return {"json": request}', REQUEST);
    assert.deepEqual(json(result.body), {
      method: 'POST',
      url: REQUEST.url,
      scheme: 'http',
      host: 'api.test:8080',
      path: '/v1/echo',
      query: { name: ['codex', 'again'], blank: [''] },
      headers: { Host: 'api.test:8080', 'X-Trace': 'last', 'Content-Type': 'application/octet-stream' },
      body_text: 'hé\ufffd',
      body_bytes_b64: REQUEST.body.toString('base64'),
    });
    assert.equal(result.status, null);
    assert.equal(result.contentType, 'application/json');
  });

  test('result keys: status, stringified headers, json before text before body_base64', async () => {
    const p = pool();
    const both = await p.run(
      'def handle(request):\n    return {"status": 201, "headers": {"X-N": 5}, "json": {"ü": 1}, "text": "ignored"}',
      REQUEST,
    );
    assert.equal(both.status, 201);
    assert.deepEqual(both.headers, { 'X-N': '5' });
    assert.equal(both.body.toString('utf8'), '{"ü": 1}', 'json.dumps with non-ASCII kept');

    const text = await p.run(
      'def handle(request):\n    return {"text": "plain", "body_base64": "AAE="}',
      REQUEST,
    );
    assert.equal(text.body.toString('utf8'), 'plain');
    assert.equal(text.contentType, 'text/plain; charset=utf-8');

    const bytes = await p.run('def handle(request):\n    return {"body_base64": "AAH/"}', REQUEST);
    assert.deepEqual([...bytes.body], [0, 1, 255]);
    assert.equal(bytes.contentType, null);

    const empty = await p.run('def handle(request):\n    return {}', REQUEST);
    assert.equal(empty.body.length, 0);
  });

  test('CONTRACT error codes; the process keeps serving after each', async () => {
    const p = pool();
    await rejectsWith(p.run('   \n', REQUEST), 'E_MOCK_PYTHON_EMPTY_CODE');
    await rejectsWith(p.run('x = 1', REQUEST), 'E_MOCK_PYTHON_MISSING_HANDLE', /define handle\(request\)/);
    await rejectsWith(
      p.run('def handle(r):\n    return [1]', REQUEST),
      'E_MOCK_PYTHON_INVALID_RESULT',
      /must return dict/,
    );
    await rejectsWith(
      p.run('def handle(r):\n    raise ValueError("boom")', REQUEST),
      'E_MOCK_PYTHON_ERROR',
      /ValueError: boom/,
    );
    await rejectsWith(p.run('def handle(r:\n', REQUEST), 'E_MOCK_PYTHON_ERROR', /SyntaxError/);
    await rejectsWith(
      p.run('def handle(r):\n    raise SystemExit(3)', REQUEST),
      'E_MOCK_PYTHON_ERROR',
      /SystemExit/,
    );
    const ok = await p.run('def handle(r):\n    return {"text": "still here"}', REQUEST);
    assert.equal(ok.body.toString(), 'still here');
  });

  test('print() in a handler goes to stderr and cannot corrupt the protocol', async () => {
    const p = pool();
    const result = await p.run(
      'def handle(r):\n    print("{\\"id\\": 1, \\"ok\\": false}")\n    return {"text": "clean"}',
      REQUEST,
    );
    assert.equal(result.body.toString(), 'clean');
  });

  test('a handler that loops forever times out; the process is replaced and serves the next request', async () => {
    const p = pool({ timeoutMs: 1000 });
    const startedAt = Date.now();
    await rejectsWith(
      p.run('def handle(r):\n    while True:\n        pass', REQUEST),
      'E_MOCK_PYTHON_TIMEOUT',
      /1000 ms/,
    );
    const elapsed = Date.now() - startedAt;
    assert.ok(elapsed >= 1000 && elapsed < 4000, `timed out after ${elapsed} ms`);
    const next = await p.run('def handle(r):\n    return {"text": "fresh"}', REQUEST);
    assert.equal(next.body.toString(), 'fresh');
  });

  test('requests queue behind each other and each gets its own answer', async () => {
    const p = pool();
    const code = 'def handle(r):\n    return {"text": r["query"]["n"][0]}';
    const answers = await Promise.all(
      Array.from({ length: 8 }, (_, n) => p.run(code, { ...REQUEST, url: `http://q.test/?n=${n}` })),
    );
    assert.deepEqual(
      answers.map((a) => a.body.toString()),
      Array.from({ length: 8 }, (_, n) => String(n)),
    );
  });

  test('a crashing process fails its request and is respawned', async () => {
    const p = pool();
    await rejectsWith(
      p.run('import os\ndef handle(r):\n    os._exit(9)', REQUEST),
      'E_MOCK_PYTHON_ERROR',
      /exited/,
    );
    assert.equal(
      (await p.run('def handle(r):\n    return {"text": "again"}', REQUEST)).body.toString(),
      'again',
    );
  });

  test('address-space limit: a large allocation is a MemoryError, not a worker problem', async () => {
    const p = pool({ memoryMb: 128 });
    await rejectsWith(
      p.run('def handle(r):\n    b = bytearray(512 * 1024 * 1024)\n    return {}', REQUEST),
      'E_MOCK_PYTHON_ERROR',
      /MemoryError/,
    );
    assert.equal((await p.run('def handle(r):\n    return {"text": "ok"}', REQUEST)).body.toString(), 'ok');
  });

  test('handlers see none of the worker environment, cannot fork, and run as nobody when the worker is root', async () => {
    const result = await pool().run(
      'import os\ndef handle(r):\n    try:\n        os.fork()\n        forked = True\n    except OSError:\n        forked = False\n' +
        '    return {"json": {"env": sorted(os.environ), "uid": os.getuid(), "forked": forked}}',
      REQUEST,
    );
    const seen = json(result.body) as { env: string[]; uid: number; forked: boolean };
    assert.deepEqual(seen.env, ['LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE']);
    assert.equal(seen.forked, false);
    if (process.getuid?.() === 0) assert.equal(seen.uid, 65534);
  });

  describe('no network for handler code', () => {
    let server: net.Server;
    let port = 0;
    let connections = 0;

    before(async () => {
      server = net.createServer((socket) => {
        connections++;
        socket.destroy();
      });
      await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', resolve));
      port = (server.address() as net.AddressInfo).port;
    });

    after(async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });

    const connectCode = () =>
      'import socket\ndef handle(r):\n    s = socket.create_connection(("127.0.0.1", ' +
      port +
      '), timeout=2)\n    return {"text": "connected"}';

    test('strongest isolation here: an empty network namespace (the worker runs as root)', async (t) => {
      const p = pool();
      await rejectsWith(p.run(connectCode(), REQUEST), 'E_MOCK_PYTHON_ERROR', /OSError|unreachable|refused/i);
      if (process.getuid?.() !== 0) t.diagnostic(`not root: isolation is ${p.isolation}`);
      else assert.equal(p.isolation, 'netns');
      assert.equal(connections, 0);
    });

    test('fallback: socket creation is blocked before user code runs', async () => {
      const p = pool({ networkIsolation: 'socket-block' });
      await rejectsWith(
        p.run(connectCode(), REQUEST),
        'E_MOCK_PYTHON_ERROR',
        /PermissionError: network access is disabled/,
      );
      assert.equal(p.isolation, 'socket-block');
      assert.equal(connections, 0);
    });
  });
});
