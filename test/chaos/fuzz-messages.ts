import { randomUUID } from 'node:crypto';
import { platformMessageExample } from '../support/platform';
import type { Publication } from './publisher';

/** A small seeded PRNG (mulberry32): the same fuzz every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function nested(depth: number): unknown {
  let v: unknown = 'bottom';
  for (let i = 0; i < depth; i += 1) v = { n: v };
  return v;
}

/** What kind of bad a fuzzed message is (the first field of its label, for the report). */
export type FuzzKind =
  | 'not-json'
  | 'not-an-object'
  | 'missing-field'
  | 'wrong-type'
  | 'unknown-experiment'
  | 'huge-message-id'
  | 'huge-agent-key'
  | 'deeply-nested'
  | 'no-cases';

/**
 * `count` bad messages for an intake: garbage, wrong shapes and valid-looking messages no start
 * can succeed with (an experiment that does not exist, a 1 000-character message id, a huge agent
 * key, deeply nested JSON). None names a row of any database: every one of them must end in the
 * dead-letter queue, none may start a run.
 */
export function fuzzedMessages(count: number, seed = 13): Array<Publication & { kind: FuzzKind }> {
  const rand = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  const example = platformMessageExample();
  const base = () => {
    const m = structuredClone(example);
    m.message_id = randomUUID();
    // Far above any test database's identity offset: no such experiment anywhere.
    const ghost = String(9_000_000_000_000 + Math.floor(rand() * 1e9));
    m.experiment = { ...(m.experiment as object), id: ghost };
    return m;
  };
  const kinds: FuzzKind[] = [
    'not-json',
    'not-an-object',
    'missing-field',
    'wrong-type',
    'unknown-experiment',
    'huge-message-id',
    'huge-agent-key',
    'deeply-nested',
    'no-cases',
  ];
  const out: Array<Publication & { kind: FuzzKind }> = [];
  for (let i = 0; i < count; i += 1) {
    const kind = pick(kinds);
    const m = base();
    let body: string;
    switch (kind) {
      case 'not-json':
        body = pick([
          '',
          '{',
          'null,',
          '\u0000\u00ff garbage',
          '{"message_id": "x"',
          JSON.stringify(m).slice(0, 40),
        ]);
        break;
      case 'not-an-object':
        body = JSON.stringify(pick([42, 'text', [1, 2, 3], null, true, [m]]));
        break;
      case 'missing-field': {
        const field = pick(['experiment', 'agent', 'run_cases', 'dataset', 'message_id']);
        delete m[field];
        body = JSON.stringify(m);
        break;
      }
      case 'wrong-type': {
        const field = pick(['experiment', 'agent', 'run_cases']);
        m[field] = pick([{}, 'abc', -1, [null], { id: { nested: true } }]);
        body = JSON.stringify(m);
        break;
      }
      case 'unknown-experiment':
        body = JSON.stringify(m);
        break;
      case 'huge-message-id':
        m.message_id = 'x'.repeat(1000 + Math.floor(rand() * 100)) + String(i);
        body = JSON.stringify(m);
        break;
      case 'huge-agent-key':
        m.agent = { ...(m.agent as object), agent_key: 'k'.repeat(100_000) };
        body = JSON.stringify(m);
        break;
      case 'deeply-nested':
        m.memo = nested(2000 + Math.floor(rand() * 1000));
        body = JSON.stringify(m);
        break;
      case 'no-cases':
        m.run_cases = [];
        body = JSON.stringify(m);
        break;
    }
    const messageId =
      typeof m.message_id === 'string' && m.message_id.length < 256 ? m.message_id : undefined;
    out.push({ body, kind, ...(messageId ? { messageId } : {}) });
  }
  return out;
}
