import { REDACTED, redactSecretText } from '../domain/secret-redaction';
import type { TextExcerpt } from './experiment-report-model';
import { countCodePoints, excerptOf } from './text-excerpt';

/**
 * A report is mailed around, so secrets must not reach it even where an agent or an old row put
 * them into free text (the original consumer stored evaluator api_keys in rows, CONTRACT §13.14).
 * Two layers: the experiment's known evaluator keys are replaced wherever they occur, and values of
 * secret-named keys (by the shared pattern, src/domain/secret-redaction) are replaced in JSON-ish and
 * `key=value` text, URL query strings included (`?api_key=…`).
 */

/** Keys shorter than this are not searched for: they would blank out ordinary words. */
const MIN_SECRET_CHARS = 8;
/** A cut excerpt may end in the first characters of a key; this many are enough to remove. */
const MIN_PARTIAL_CHARS = 4;

export class SecretRedactor {
  private readonly secrets: string[];

  constructor(knownSecrets: Iterable<string>) {
    // Longest first, so a key that contains another is replaced whole.
    this.secrets = [...new Set([...knownSecrets].filter((s) => s.length >= MIN_SECRET_CHARS))].sort(
      (a, b) => b.length - a.length,
    );
  }

  text(s: string): string {
    let out = s;
    for (const secret of this.secrets) out = out.split(secret).join(REDACTED);
    return redactSecretText(out);
  }

  /**
   * An excerpt's parts are redacted apart; where a part was cut, a known key straddling the cut
   * would leave its first (or last) characters behind, so those are removed as well.
   */
  excerpt(e: TextExcerpt): TextExcerpt {
    const whole = countCodePoints(e.head) + countCodePoints(e.tail) >= e.totalChars;
    if (whole) return excerptOf(this.text(e.head + e.tail));
    return {
      head: this.trimPartialEnd(this.text(e.head)),
      tail: e.tail === '' ? '' : this.trimPartialStart(this.text(e.tail)),
      totalChars: e.totalChars,
    };
  }

  private trimPartialEnd(s: string): string {
    for (const secret of this.secrets) {
      for (let k = secret.length - 1; k >= MIN_PARTIAL_CHARS; k--) {
        if (s.endsWith(secret.slice(0, k))) return s.slice(0, s.length - k) + REDACTED;
      }
    }
    return s;
  }

  private trimPartialStart(s: string): string {
    for (const secret of this.secrets) {
      for (let k = secret.length - 1; k >= MIN_PARTIAL_CHARS; k--) {
        if (s.startsWith(secret.slice(secret.length - k))) return REDACTED + s.slice(k);
      }
    }
    return s;
  }
}
