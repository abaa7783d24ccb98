import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { CA_FILE_NAME, CertificateAuthority } from '../../src/mock-gateway/certificate-authority';

/** A TLS handshake against a server presenting ca's leaf for `serverName`; resolves with the client's verdict. */
async function handshake(
  ca: CertificateAuthority,
  leafFor: string,
  connect: { host: string; servername?: string },
  trusted: string,
): Promise<{ authorized: boolean; error?: string }> {
  const server = net.createServer((raw) => {
    const socket = new tls.TLSSocket(raw, { isServer: true, secureContext: ca.secureContext(leafFor) });
    socket.on('error', () => socket.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  try {
    return await new Promise((resolve) => {
      const client = tls.connect({
        host: '127.0.0.1',
        port,
        servername: connect.servername,
        ca: trusted,
        checkServerIdentity: (_h, cert) => tls.checkServerIdentity(connect.host, cert),
      });
      client.once('secureConnect', () => {
        resolve({ authorized: client.authorized });
        client.destroy();
      });
      client.once('error', (err) => resolve({ authorized: false, error: err.message }));
    });
  } finally {
    server.close();
  }
}

describe('CertificateAuthority', () => {
  const dirs: string[] = [];
  const tempDir = async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'agentbench-ca-'));
    dirs.push(dir);
    return dir;
  };
  after(async () => {
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });

  const ca = CertificateAuthority.generate();

  test('is a CA certificate clients can pin', () => {
    const cert = new X509Certificate(ca.certPem);
    assert.equal(cert.ca, true);
    assert.match(cert.subject, /agentbench mock gateway CA/);
  });

  test('leaf certificates for DNS names and IP addresses verify against the CA, and only against it', async () => {
    assert.deepEqual(
      await handshake(
        ca,
        'api.example.com',
        { host: 'api.example.com', servername: 'api.example.com' },
        ca.certPem,
      ),
      {
        authorized: true,
      },
    );
    assert.deepEqual(await handshake(ca, '127.0.0.1', { host: '127.0.0.1' }, ca.certPem), {
      authorized: true,
    });

    const wrongName = await handshake(
      ca,
      'api.example.com',
      { host: 'other.example.com', servername: 'other.example.com' },
      ca.certPem,
    );
    assert.match(wrongName.error ?? '', /other\.example\.com/);
    const otherCa = CertificateAuthority.generate();
    const untrusted = await handshake(
      ca,
      'api.example.com',
      { host: 'api.example.com', servername: 'api.example.com' },
      otherCa.certPem,
    );
    assert.equal(untrusted.authorized, false);
  });

  test('leaves are cached per hostname (case-insensitively)', () => {
    assert.equal(ca.leafCertificatePem('Cache.Example.com'), ca.leafCertificatePem('cache.example.com'));
    assert.notEqual(ca.leafCertificatePem('a.example.com'), ca.leafCertificatePem('b.example.com'));
    const leaf = new X509Certificate(ca.leafCertificatePem('a.example.com'));
    assert.equal(leaf.subjectAltName, 'DNS:a.example.com');
    assert.ok(leaf.checkIssued(new X509Certificate(ca.certPem)));
  });

  test('loadOrCreate creates the CA once (key file 0600) and loads the same CA afterwards', async () => {
    const dir = await tempDir();
    const first = await CertificateAuthority.loadOrCreate(dir);
    const file = path.join(dir, CA_FILE_NAME);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.match(await readFile(file, 'utf8'), /BEGIN RSA PRIVATE KEY/);
    const second = await CertificateAuthority.loadOrCreate(dir);
    assert.equal(second.certPem, first.certPem);
    // The reloaded key signs leaves that verify against the original certificate.
    assert.deepEqual(
      await handshake(second, 'x.test', { host: 'x.test', servername: 'x.test' }, first.certPem),
      { authorized: true },
    );
  });

  test('concurrent creators in one directory all end up with the same CA', async () => {
    const dir = await tempDir();
    const cas = await Promise.all(Array.from({ length: 4 }, () => CertificateAuthority.loadOrCreate(dir)));
    assert.equal(new Set(cas.map((c) => c.certPem)).size, 1);
    assert.equal(cas[0]?.certPem, (await CertificateAuthority.loadOrCreate(dir)).certPem);
  });

  test('an unreadable CA file is a clear error, not a silent new CA', async () => {
    const dir = await tempDir();
    await writeFile(path.join(dir, CA_FILE_NAME), 'not a pem');
    await assert.rejects(
      CertificateAuthority.loadOrCreate(dir),
      /E_MOCK_GATEWAY_CA: .*agentbench-mock-ca\.pem/,
    );
  });
});
