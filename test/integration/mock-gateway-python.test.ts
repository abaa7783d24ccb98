import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import Dockerode from 'dockerode';
import { createLogger } from '../../src/logger';
import {
  PYTHON_HANDLER_LABEL,
  PythonHandlerError,
  PythonHandlerPool,
  type PythonHandlerPoolOptions,
  type PythonHandlerRequest,
} from '../../src/mock-gateway/python-handler-pool';
import { AGENT_BASE, ensureBenchImages, newTestRunId, SOCKET_PATH, TEST_RUN_LABEL } from './docker-fixtures';

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

const docker = new Dockerode({ socketPath: SOCKET_PATH });
const runId = newTestRunId();

/** The sandbox containers of this test file still on the daemon (running or being removed). */
async function sandboxes(extraLabel?: string): Promise<Dockerode.ContainerInfo[]> {
  const label = [`${PYTHON_HANDLER_LABEL}=true`, `${TEST_RUN_LABEL}=${runId}`];
  if (extraLabel) label.push(extraLabel);
  return docker.listContainers({ all: true, filters: { label } });
}

async function eventually<T>(probe: () => Promise<T | undefined>, what: string, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('PythonHandlerPool (real python3 in a sandbox container per case)', () => {
  const pools: PythonHandlerPool[] = [];
  function pool(options: Partial<PythonHandlerPoolOptions> = {}): PythonHandlerPool {
    const created = new PythonHandlerPool({
      log,
      docker,
      image: AGENT_BASE,
      ...options,
      labels: { [TEST_RUN_LABEL]: runId, ...options.labels },
    });
    pools.push(created);
    return created;
  }

  before(async () => {
    await ensureBenchImages(docker);
  });

  after(async () => {
    await Promise.all(pools.map((p) => p.close()));
    await eventually(
      async () => ((await sandboxes()).length === 0 ? true : undefined),
      'every sandbox container to be gone after close()',
    );
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

  test('handlers see none of the worker environment, cannot fork, and run as the case’s own uid', async () => {
    const p = pool();
    const result = await p.run(
      'import os\ndef handle(r):\n    try:\n        os.fork()\n        forked = True\n    except OSError:\n        forked = False\n' +
        '    return {"json": {"env": sorted(os.environ), "uid": os.getuid(), "gid": os.getgid(), "forked": forked}}',
      REQUEST,
    );
    const seen = json(result.body) as { env: string[]; uid: number; gid: number; forked: boolean };
    assert.deepEqual(seen.env, ['LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE']);
    assert.equal(seen.forked, false);
    assert.equal(seen.uid, p.uid);
    assert.equal(seen.gid, p.uid);
    assert.ok(p.uid >= 2_000_000, 'a uid no host account has');
    assert.notEqual(pool().uid, p.uid, 'another case gets another uid');
  });

  test('the sandbox container: no network, read-only, no capabilities, limits, no log, self-removing', async () => {
    const p = pool({ memoryMb: 128, labels: { 'test.case': 'inspect' } });
    await p.run('def handle(r):\n    return {}', REQUEST);
    const [info] = await sandboxes('test.case=inspect');
    assert.ok(info);
    const c = await docker.getContainer(info.Id).inspect();
    assert.equal(c.HostConfig.NetworkMode, 'none');
    assert.equal(c.HostConfig.ReadonlyRootfs, true);
    assert.deepEqual(c.HostConfig.CapDrop, ['ALL']);
    assert.deepEqual(c.HostConfig.SecurityOpt, ['no-new-privileges']);
    assert.equal(c.HostConfig.PidsLimit, 16);
    assert.equal(c.HostConfig.Memory, (128 + 64) * 1024 * 1024);
    assert.equal(c.HostConfig.NanoCpus, 1_000_000_000);
    assert.equal(c.HostConfig.AutoRemove, true);
    assert.equal(c.HostConfig.LogConfig?.Type, 'none');
    assert.deepEqual(c.Mounts, [], 'no bind mount, no volume');
    assert.equal(c.Config.User, `${p.uid}:${p.uid}`);
    await p.close();
    await eventually(
      async () => ((await sandboxes('test.case=inspect')).length === 0 ? true : undefined),
      'the container to be removed on close()',
    );
  });

  test('a worker that dies (SIGKILL) leaves no sandbox behind: stdin closes, the container ends and removes itself', async () => {
    const script = `
      const Dockerode = require('dockerode');
      const { PythonHandlerPool } = require(${JSON.stringify(path.resolve(__dirname, '../../src/mock-gateway/python-handler-pool.ts'))});
      const { createLogger } = require(${JSON.stringify(path.resolve(__dirname, '../../src/logger.ts'))});
      const pool = new PythonHandlerPool({ log: createLogger({ level: 'silent' }), docker: new Dockerode({ socketPath: ${JSON.stringify(SOCKET_PATH)} }),
        image: ${JSON.stringify(AGENT_BASE)}, labels: { ${JSON.stringify(TEST_RUN_LABEL)}: ${JSON.stringify(runId)}, 'test.case': 'orphan' } });
      pool.run('def handle(r):\\n    return {"text": "up"}', { method: 'GET', url: 'http://x/', headers: [], body: Buffer.alloc(0) })
        .then((r) => { process.stdout.write(r.body.toString() + '\\n'); setInterval(() => undefined, 1000); });
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    try {
      await eventually(async () => (out.includes('up') ? true : undefined), 'the child’s handler to answer');
      assert.equal((await sandboxes('test.case=orphan')).length, 1);
    } finally {
      child.kill('SIGKILL');
    }
    await eventually(
      async () => ((await sandboxes('test.case=orphan')).length === 0 ? true : undefined),
      'the orphaned sandbox to remove itself',
    );
  });

  describe('a hostile handler', () => {
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

    /** Runs `body` (the inside of handle(r), returning a dict) and returns its json. */
    async function probe(p: PythonHandlerPool, body: string): Promise<Record<string, unknown>> {
      const code = `import os, socket, signal\ndef handle(r):\n${body
        .split('\n')
        .map((line) => `    ${line}`)
        .join('\n')}`;
      return json((await p.run(code, REQUEST)).body) as Record<string, unknown>;
    }

    const attempt = (expr: string, name: string) =>
      `try:\n    ${expr}\n    out[${JSON.stringify(name)}] = "ok"\nexcept Exception as e:\n    out[${JSON.stringify(name)}] = type(e).__name__`;

    test('cannot reach the network: an empty network namespace', async () => {
      const p = pool();
      await rejectsWith(
        p.run(
          `import socket\ndef handle(r):\n    socket.create_connection(("172.17.0.1", ${port}), timeout=2)\n    return {}`,
          REQUEST,
        ),
        'E_MOCK_PYTHON_ERROR',
        /OSError|unreachable|refused/i,
      );
      const seen = await probe(
        p,
        'return {"json": {"interfaces": sorted(name for _, name in socket.if_nameindex())}}',
      );
      assert.deepEqual(seen.interfaces, ['lo']);
      assert.equal(connections, 0);
    });

    test('reads no host file: not the source tree, not the host’s /etc/passwd', async () => {
      const p = pool();
      const source = path.resolve(__filename);
      const seen = await probe(
        p,
        [
          'out = {}',
          attempt(`open(${JSON.stringify(source)}).read()`, 'source'),
          attempt(`os.listdir(${JSON.stringify(path.resolve(__dirname, '../..'))})`, 'repo'),
          'out["passwd"] = open("/etc/passwd").read()',
          attempt('open("/proc/1/root/etc/shadow").read()', 'shadow'),
          'return {"json": out}',
        ].join('\n'),
      );
      assert.equal(seen.source, 'FileNotFoundError');
      assert.equal(seen.repo, 'FileNotFoundError');
      assert.notEqual(seen.passwd, readFileSync('/etc/passwd', 'utf8'), 'the image’s passwd, not the host’s');
      assert.doesNotMatch(String(seen.passwd), /^postgres:/m);
      assert.equal(seen.shadow, 'PermissionError');
    });

    test('sees and kills no other process: not another case’s handler, not the host’s', async () => {
      const victim = pool({ labels: { 'test.case': 'victim' } });
      await victim.run('def handle(r):\n    return {"text": "alive"}', REQUEST);
      const [info] = await sandboxes('test.case=victim');
      assert.ok(info);
      const victimHostPid = (await docker.getContainer(info.Id).inspect()).State.Pid;
      assert.ok(victimHostPid > 0);

      const seen = await probe(
        pool(),
        [
          'out = {"pids": sorted(int(d) for d in os.listdir("/proc") if d.isdigit())}',
          'out["cmdlines"] = sorted(open("/proc/%d/cmdline" % p).read().split("\\0")[0] for p in out["pids"])',
          attempt(`os.kill(${victimHostPid}, signal.SIGKILL)`, 'kill_victim'),
          'return {"json": out}',
        ].join('\n'),
      );
      assert.deepEqual(seen.cmdlines, ['/sbin/docker-init', 'python3'], 'its own container’s processes only');
      assert.equal(seen.kill_victim, 'ProcessLookupError');
      assert.equal(
        (await victim.run('def handle(r):\n    return {"text": "alive"}', REQUEST)).body.toString(),
        'alive',
        'the other case’s handler still answers',
      );
    });

    test('opens no Unix socket of the host (Postgres), writes neither the host’s /tmp nor its own root', async () => {
      const marker = `agentbench-hostile-${runId}`;
      const pgSocket = '/var/run/postgresql/.s.PGSQL.5432';
      const seen = await probe(
        pool(),
        [
          'out = {}',
          attempt(`socket.socket(socket.AF_UNIX).connect(${JSON.stringify(pgSocket)})`, 'postgres'),
          attempt('socket.socket(socket.AF_UNIX).connect("/var/run/docker.sock")', 'docker'),
          attempt(`open("/tmp/${marker}", "w").write("x")`, 'tmp'),
          attempt(`open("/${marker}", "w").write("x")`, 'root'),
          'return {"json": out}',
        ].join('\n'),
      );
      assert.equal(seen.postgres, 'FileNotFoundError');
      assert.equal(seen.docker, 'FileNotFoundError');
      assert.equal(seen.tmp, 'ok', 'a private /tmp of its own');
      assert.equal(existsSync(`/tmp/${marker}`), false, 'not the host’s /tmp');
      assert.equal(seen.root, 'OSError');
    });

    test('a normal handler still answers next to them', async () => {
      const result = await pool().run('def handle(r):\n    return {"json": {"ok": True}}', REQUEST);
      assert.deepEqual(json(result.body), { ok: true });
    });
  });
});
