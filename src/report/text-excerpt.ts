import type { TextExcerpt } from './experiment-report-model';

/**
 * Cutting long texts for the report. Lengths count code points (as Postgres `length()` does), and a
 * cut never splits a surrogate pair, so an emoji at the boundary cannot become a broken character.
 */

const isHighSurrogate = (unit: number) => unit >= 0xd800 && unit <= 0xdbff;
const isLowSurrogate = (unit: number) => unit >= 0xdc00 && unit <= 0xdfff;

export function countCodePoints(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    if (!(isLowSurrogate(s.charCodeAt(i)) && i > 0 && isHighSurrogate(s.charCodeAt(i - 1)))) n++;
  }
  return n;
}

/** The first `n` code points of `s`. */
export function firstCodePoints(s: string, n: number): string {
  if (n <= 0) return '';
  let i = 0;
  for (let taken = 0; i < s.length && taken < n; taken++) {
    i += isHighSurrogate(s.charCodeAt(i)) && isLowSurrogate(s.charCodeAt(i + 1)) ? 2 : 1;
  }
  return s.slice(0, i);
}

/** The last `n` code points of `s`. */
export function lastCodePoints(s: string, n: number): string {
  if (n <= 0) return '';
  let i = s.length;
  for (let taken = 0; i > 0 && taken < n; taken++) {
    i -= isLowSurrogate(s.charCodeAt(i - 1)) && i >= 2 && isHighSurrogate(s.charCodeAt(i - 2)) ? 2 : 1;
  }
  return s.slice(i);
}

/** A whole text as an excerpt (nothing cut yet). */
export function excerptOf(text: string): TextExcerpt {
  return { head: text, tail: '', totalChars: countCodePoints(text) };
}

interface ClippedText {
  head: string;
  tail: string;
  /** Code points of the original text that are in neither part. */
  omitted: number;
}

/**
 * At most `headChars` from the start and `tailChars` from the end of what the excerpt kept;
 * `omitted` counts everything in between, including what the loader never fetched.
 */
export function clipExcerpt(e: TextExcerpt, headChars: number, tailChars = 0): ClippedText {
  const kept = e.tail === '' ? e.head : e.head + e.tail;
  const keptChars = countCodePoints(kept);
  const whole = keptChars >= e.totalChars;
  if (whole && keptChars <= headChars + tailChars) return { head: kept, tail: '', omitted: 0 };
  // The excerpt's own split point marks a gap in the original text; keep head and tail apart.
  const headSource = whole ? kept : e.head;
  const tailSource = whole ? kept : e.tail;
  const head = firstCodePoints(headSource, headChars);
  const tail = lastCodePoints(
    tailSource,
    Math.min(tailChars, Math.max(0, countCodePoints(tailSource) - (whole ? countCodePoints(head) : 0))),
  );
  const omitted = Math.max(0, e.totalChars - countCodePoints(head) - countCodePoints(tail));
  return omitted === 0 ? { head: head + tail, tail: '', omitted } : { head, tail, omitted };
}
