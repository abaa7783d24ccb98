import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { promisify } from 'node:util';
import { Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time';
import { SA } from '../../src/domain/search-attributes';
import { INDEXED_VALUE_TYPES } from '../../src/temporal/search-attribute-registration';
import { eventually, localTestEnv } from '../support/stack';

const run = promisify(execFile);
const BENCHCTL = path.resolve(__dirname, '../../src/cli/benchctl.ts');
const address = localTestEnv().TEMPORAL_ADDRESS;

async function registerCommand(env: Record<string, string>, args: string[] = []) {
  return run(process.execPath, ['--import', 'tsx', BENCHCTL, 'register-search-attributes', ...args], {
    env: { ...process.env, ...localTestEnv(), ...env },
    timeout: 60_000,
  }).then(
    ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
    (err: { code: number; stdout: string; stderr: string }) => ({
      code: err.code,
      stdout: err.stdout,
      stderr: err.stderr,
    }),
  );
}

/**
 * What the k8s Job and the compose one-shot service run, against fresh namespaces of the real
 * Temporal dev server (deleted afterwards).
 */
describe('benchctl register-search-attributes', () => {
  let connection: Connection;
  const namespaces: string[] = [];

  before(async () => {
    connection = await Connection.connect({ address });
  });

  after(async () => {
    for (const namespace of namespaces)
      await connection.operatorService.deleteNamespace({ namespace }).catch(() => undefined);
    await connection?.close();
  });

  async function freshNamespace(): Promise<string> {
    const namespace = `agentbench-t-${randomBytes(4).toString('hex')}`;
    await connection.workflowService.registerNamespace({
      namespace,
      workflowExecutionRetentionPeriod: msToTs('1 day'),
    });
    namespaces.push(namespace);
    // A new namespace reaches the frontend's cache within seconds.
    await eventually(
      async () => (await connection.operatorService.listSearchAttributes({ namespace })) && true,
      30_000,
      `namespace ${namespace}`,
    );
    return namespace;
  }

  async function customAttributes(namespace: string) {
    return (await connection.operatorService.listSearchAttributes({ namespace })).customAttributes ?? {};
  }

  test('registers every attribute of src/domain/search-attributes.ts with its type; a second run changes nothing', async () => {
    const namespace = await freshNamespace();
    const first = await registerCommand({ TEMPORAL_NAMESPACE: namespace });
    assert.equal(first.code, 0, first.stderr);
    const names = Object.values(SA).map((k) => k.name);
    assert.match(first.stdout, new RegExp(`registered ${names.join(', ')}`));
    const registered = await customAttributes(namespace);
    for (const key of Object.values(SA))
      assert.equal(registered[key.name], INDEXED_VALUE_TYPES[key.type], key.name);

    const second = await registerCommand({ TEMPORAL_NAMESPACE: namespace });
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /nothing to register; already present: /);
  });

  test('a name taken with another type is refused with E_SEARCH_ATTRIBUTE_TYPE, and nothing else is added', async () => {
    const namespace = await freshNamespace();
    await connection.operatorService.addSearchAttributes({
      namespace,
      searchAttributes: { [SA.experimentId.name]: INDEXED_VALUE_TYPES.INT },
    });
    const r = await registerCommand({ TEMPORAL_NAMESPACE: namespace });
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^benchctl: E_SEARCH_ATTRIBUTE_TYPE: ExperimentId is registered as type 3, not KEYWORD/,
    );
    assert.deepEqual(Object.keys(await customAttributes(namespace)), [SA.experimentId.name]);
  });

  test('a namespace that never appears: gives up after --wait with one error line', async () => {
    const r = await registerCommand(
      { TEMPORAL_NAMESPACE: `agentbench-absent-${randomBytes(4).toString('hex')}` },
      ['--wait', '0'],
    );
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^benchctl: cannot register search attributes in namespace agentbench-absent-[0-9a-f]+ at [^ ]+: .*\n$/,
    );
  });
});
