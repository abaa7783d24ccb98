import type { LatencyBin, ScorerSummary } from './experiment-report-model';

/**
 * Score statistics of a report. A judge answers 0, 0.5 or 1 (CONTRACT §7.3); −1 is the sentinel
 * for "no verdict" (failed case, missing config, judge error, timeout: §7.2). Like our final_score
 * (§13.15), means leave sentinels out and count them apart; a pass is a verdict of 1.
 */

export const SENTINEL_SCORE = -1;
const PASS_SCORE = 1;

interface ScoreSample {
  scorerKey: string;
  score: number;
}

/**
 * One summary per scorer: the keys in `orderedKeys` first (configured evaluators, even without any
 * score yet), then any other key found in the samples, alphabetically.
 */
export function summarizeScores(
  samples: Iterable<ScoreSample>,
  orderedKeys: readonly string[] = [],
): ScorerSummary[] {
  const byKey = new Map<string, number[]>();
  for (const key of orderedKeys) byKey.set(key, []);
  const extra: string[] = [];
  for (const { scorerKey, score } of samples) {
    let list = byKey.get(scorerKey);
    if (!list) {
      list = [];
      byKey.set(scorerKey, list);
      extra.push(scorerKey);
    }
    list.push(score);
  }
  const keys = [...new Set(orderedKeys), ...extra.sort()];
  return keys.map((scorerKey) => summarize(scorerKey, byKey.get(scorerKey) ?? []));
}

function summarize(scorerKey: string, scores: number[]): ScorerSummary {
  const verdicts = scores.filter((s) => s !== SENTINEL_SCORE && Number.isFinite(s));
  const passes = verdicts.filter((s) => s >= PASS_SCORE).length;
  const stats = numberStats(verdicts);
  return {
    scorerKey,
    count: scores.length,
    verdicts: verdicts.length,
    sentinels: scores.filter((s) => s === SENTINEL_SCORE).length,
    mean: stats?.mean ?? null,
    min: stats?.min ?? null,
    max: stats?.max ?? null,
    passes,
    passRate: verdicts.length > 0 ? passes / verdicts.length : null,
    distribution: valueCounts(scores.filter((s) => Number.isFinite(s))),
  };
}

function valueCounts(values: readonly number[]): Array<{ score: number; count: number }> {
  const counts = new Map<number, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts.entries()].sort((a, b) => a[0] - b[0]).map(([score, count]) => ({ score, count }));
}

const LATENCY_BINS = 12;

/**
 * Equal-width bins from the smallest to the largest latency (at most LATENCY_BINS; fewer when the
 * spread is under one millisecond per bin). Empty for no values.
 */
export function latencyHistogram(valuesMs: readonly number[], bins = LATENCY_BINS): LatencyBin[] {
  const stats = numberStats(valuesMs);
  if (!stats) return [];
  const { min, max } = stats;
  const n = Math.max(1, Math.min(bins, Math.ceil(max - min)));
  const width = n === 1 ? Math.max(1, max - min) : (max - min) / n;
  const out: LatencyBin[] = Array.from({ length: n }, (_, i) => ({
    fromMs: min + i * width,
    toMs: i === n - 1 ? Math.max(max, min + width) : min + (i + 1) * width,
    count: 0,
  }));
  for (const v of valuesMs) {
    const i = Math.min(n - 1, Math.floor((v - min) / width));
    (out[i] as LatencyBin).count += 1;
  }
  return out;
}

/** Mean, min and max; null for an empty list. */
export function numberStats(values: readonly number[]): { mean: number; min: number; max: number } | null {
  if (values.length === 0) return null;
  let sum = 0;
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    sum += v;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { mean: sum / values.length, min, max };
}
