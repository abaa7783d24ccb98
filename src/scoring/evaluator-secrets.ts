import type pg from 'pg';
import { z } from 'zod';
import { REDACTED } from '../domain/secret-redaction';

/**
 * Evaluator api keys, read at scoring time. Workflow payloads and our stored run requests carry
 * scorers redacted (ARCHITECTURE §5 item 10), so the key comes from the row the platform built
 * `scorer_config` from: `evaluators.api_key` (CONTRACT §2.4).
 */

const ids = z.array(z.number().int().positive());
const keyRow = z.object({ id: z.coerce.number().int(), api_key: z.string() });

/** evaluators.id → api_key for the ids that exist (an empty key stays empty: "config missing"). */
export async function loadEvaluatorApiKeys(
  pool: pg.Pool,
  evaluatorIds: number[],
): Promise<Map<number, string>> {
  const wanted = [...new Set(ids.parse(evaluatorIds.filter((id) => id > 0)))];
  if (wanted.length === 0) return new Map();
  const { rows } = await pool.query('SELECT id, api_key FROM evaluators WHERE id = ANY($1::bigint[])', [
    wanted,
  ]);
  return new Map(
    rows.map((raw) => {
      const row = keyRow.parse(raw);
      return [row.id, row.api_key] as const;
    }),
  );
}

/**
 * Copies of `scorers` with `scorer_config.api_key` from `keys`. A scorer whose key cannot be
 * looked up keeps what it has, except the redaction marker, which becomes "" so the scorer gets
 * the config-missing sentinel instead of sending "[REDACTED]" to the judge as a credential.
 */
export function withEvaluatorApiKeys<T extends { id: number; scorer_config: Record<string, unknown> }>(
  scorers: T[],
  keys: ReadonlyMap<number, string>,
): T[] {
  return scorers.map((scorer) => {
    const key = keys.get(scorer.id);
    const current = scorer.scorer_config.api_key;
    const api_key = key ?? (current === REDACTED ? '' : current);
    return { ...scorer, scorer_config: { ...scorer.scorer_config, api_key } };
  });
}
