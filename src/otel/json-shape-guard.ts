/**
 * Checks a JSON body's nesting and size as its bytes arrive, before anything parses it: a body of
 * nested `[` is refused after its first `maxDepth + 1` bytes instead of costing JSON.parse seconds
 * and hundreds of MB, a truncated body is told apart before JSON.parse scans it, and a body of
 * millions of tiny containers (cheap to send, costly to validate and flatten) is refused too.
 * Only the structure is checked (strings skipped, brackets counted); JSON.parse still judges
 * the syntax.
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;

export class JsonShapeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'JsonShapeError';
  }
}

export class JsonShapeGuard {
  private depth = 0;
  private containers = 0;
  private inString = false;

  constructor(
    private readonly maxDepth: number,
    private readonly maxContainers: number,
  ) {}

  /** Throws JsonShapeError as soon as `chunk` takes the document past a limit. */
  write(chunk: Uint8Array): void {
    const n = chunk.length;
    let i = 0;
    while (i < n) {
      if (this.inString) {
        // Strings are most of a body: jump to the next quote natively, then see whether it is escaped.
        const quote = chunk.indexOf(QUOTE, i);
        if (quote < 0) {
          this.pendingBackslashes = trailingBackslashes(chunk, n, i, this.pendingBackslashes);
          return;
        }
        const run = trailingBackslashes(chunk, quote, i, this.pendingBackslashes);
        this.pendingBackslashes = 0;
        i = quote + 1;
        if (run % 2 === 0) this.inString = false;
        continue;
      }
      const byte = chunk[i] as number;
      i++;
      if (byte === QUOTE) {
        this.inString = true;
        this.pendingBackslashes = 0;
      } else if (byte === OPEN_BRACE || byte === OPEN_BRACKET) {
        this.depth++;
        this.containers++;
        if (this.depth > this.maxDepth)
          throw new JsonShapeError(`document nested deeper than ${this.maxDepth} levels`);
        if (this.containers > this.maxContainers)
          throw new JsonShapeError(`document has more than ${this.maxContainers} objects and arrays`);
      } else if (byte === CLOSE_BRACE || byte === CLOSE_BRACKET) {
        this.depth--;
      }
    }
  }

  /** Throws when the document ended inside a string or with containers still open. */
  end(): void {
    if (this.inString || this.depth > 0) throw new JsonShapeError('truncated JSON document');
  }

  /** Backslashes right before the current position, carried across chunk boundaries inside a string. */
  private pendingBackslashes = 0;
}

/** Consecutive backslashes ending just before `end` (not before `start`), plus those carried in. */
function trailingBackslashes(chunk: Uint8Array, end: number, start: number, carried: number): number {
  let run = 0;
  let j = end - 1;
  while (j >= start && chunk[j] === BACKSLASH) {
    run++;
    j--;
  }
  return j < start ? run + carried : run;
}
