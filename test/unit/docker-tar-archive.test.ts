import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { tarArchive } from '../../src/docker/tar-archive';

describe('tarArchive (checked with GNU tar)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentbench-tar-'));
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('writes files, parent directories, modes and long paths that tar extracts intact', () => {
    const tricky = `quotes ' " $(x) \`y\`\nnewline, ünïcödé, and a NUL-free binary-ish tail \u0001`;
    const longPath = `/${'deep-directory-name/'.repeat(8)}file-with-a-long-name.json`;
    const archive = tarArchive([
      { path: '/benchmark/case.json', content: tricky },
      { path: '/benchmark/run.sh', content: '#!/bin/sh\necho hi\n', mode: 0o755 },
      { path: longPath, content: 'x'.repeat(1500) },
      { path: '/empty', content: '' },
    ]);
    assert.equal(archive.length % 512, 0);
    const archivePath = path.join(dir, 'a.tar');
    fs.writeFileSync(archivePath, archive);
    const out = path.join(dir, 'out');
    fs.mkdirSync(out);
    execFileSync('tar', ['-xf', archivePath, '-C', out, '--no-same-owner']);

    assert.equal(fs.readFileSync(path.join(out, 'benchmark/case.json'), 'utf8'), tricky);
    assert.equal(fs.statSync(path.join(out, 'benchmark/case.json')).mode & 0o777, 0o644);
    assert.equal(fs.statSync(path.join(out, 'benchmark/run.sh')).mode & 0o777, 0o755);
    assert.ok(fs.statSync(path.join(out, 'benchmark')).isDirectory());
    assert.equal(fs.readFileSync(path.join(out, longPath), 'utf8'), 'x'.repeat(1500));
    assert.equal(fs.readFileSync(path.join(out, 'empty'), 'utf8'), '');
  });

  test('rejects relative paths and path traversal', () => {
    assert.throws(() => tarArchive([{ path: 'relative.txt', content: '' }]), /absolute/);
    assert.throws(() => tarArchive([{ path: '/a/../../etc/passwd', content: '' }]), /invalid/);
  });
});
