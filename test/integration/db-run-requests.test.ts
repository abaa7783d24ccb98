import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { CaseCursorEntry } from '../../src/domain/activity-contract';
import {
  listCaseIds,
  loadCaseInput,
  loadRunRequest,
  saveRunRequest,
} from '../../src/db/run-request-repository';
import { createTestDatabase, type TestDatabase } from '../support/database';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db.drop();
});

const request = {
  message_id: 'msg-1',
  experiment: { id: 42, triggered_by: 'user-1' },
  agent: { id: 5, runtime_spec_json: { agent_image: 'img:1' } },
  scorers: [{ id: 1, scorer_key: 'task_success', scorer_config: { api_key: '[REDACTED]' } }],
};

const caseInputs = (n: number, firstId = 1000) =>
  Array.from({ length: n }, (_, i) => ({
    runCaseId: firstId + i,
    caseInput: { run_case_id: firstId + i, data_item_id: 1 + i, attempt_no: 1, user_input: `q ${i} "$(id)"` },
  }));

describe('run request repository', () => {
  test('saves once; a second save with other content changes nothing', async () => {
    const cases = caseInputs(3);
    await saveRunRequest(db.pool, {
      workflowId: 'wf-idem',
      experimentId: 42,
      messageId: 'msg-1',
      request,
      cases,
    });
    await saveRunRequest(db.pool, {
      workflowId: 'wf-idem',
      experimentId: 43,
      messageId: 'msg-2',
      request: { other: true },
      cases: [{ runCaseId: 1000, caseInput: { changed: true } }, ...caseInputs(1, 5000)],
    });

    assert.deepEqual(await loadRunRequest(db.pool, 'wf-idem'), {
      experimentId: 42,
      messageId: 'msg-1',
      request,
    });
    assert.deepEqual(await loadCaseInput(db.pool, 'wf-idem', 1001), cases[1]?.caseInput);
    assert.deepEqual(await loadCaseInput(db.pool, 'wf-idem', 1000), cases[0]?.caseInput);
    assert.equal(await loadCaseInput(db.pool, 'wf-idem', 5000), null);
  });

  test('unknown workflow or run case reads as null', async () => {
    assert.equal(await loadRunRequest(db.pool, 'wf-missing'), null);
    assert.equal(await loadCaseInput(db.pool, 'wf-missing', 1), null);
  });

  test('stores text Postgres cannot hold in JSONB (NUL, lone surrogates) as U+FFFD', async () => {
    await saveRunRequest(db.pool, {
      workflowId: 'wf-nul',
      experimentId: 1,
      messageId: 'm',
      request: { note: 'a\u0000b', ['k\u0000']: 'x' },
      cases: [{ runCaseId: 1, caseInput: { user_input: 'half \uD83D emoji 😀' } }],
    });
    assert.deepEqual((await loadRunRequest(db.pool, 'wf-nul'))?.request, {
      note: 'a\uFFFDb',
      ['k\uFFFD']: 'x',
    });
    assert.deepEqual(await loadCaseInput(db.pool, 'wf-nul', 1), { user_input: 'half \uFFFD emoji 😀' });
  });

  test('listCaseIds pages through 1234 cases in message order', async () => {
    // Descending ids prove the order is the message's, not the ids'.
    const cases = caseInputs(1234).reverse();
    await saveRunRequest(db.pool, { workflowId: 'wf-big', experimentId: 7, messageId: 'm', request, cases });

    const seen: CaseCursorEntry[] = [];
    let cursor = 0;
    for (;;) {
      const page = await listCaseIds(db.pool, 'wf-big', cursor, 500);
      if (page.length === 0) break;
      assert.ok(page.length <= 500);
      seen.push(...page);
      cursor = page[page.length - 1]?.position ?? cursor;
    }

    assert.deepEqual(
      seen.map((e) => e.runCaseId),
      cases.map((c) => c.runCaseId),
    );
    assert.deepEqual(
      seen.map((e) => e.position),
      cases.map((_, i) => i + 1),
    );
    assert.deepEqual(await loadCaseInput(db.pool, 'wf-big', 1700), { ...cases[533]?.caseInput });
  });

  test('rejects malformed input before writing', async () => {
    await assert.rejects(
      saveRunRequest(db.pool, {
        workflowId: 'wf-bad',
        experimentId: 1,
        messageId: 'm',
        request,
        cases: [{ runCaseId: -1, caseInput: {} }],
      }),
    );
    assert.equal(await loadRunRequest(db.pool, 'wf-bad'), null);
  });
});
