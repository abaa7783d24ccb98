import type { MockConfig, MockResponse, MockRule } from './message';

/**
 * The mock gateway's decisions (CONTRACT §2.5, §5.3) as pure functions: which rule answers a
 * request, what a json/text rule answers, and whether a CONNECT to an https origin is decrypted
 * so that rules can see its requests.
 *
 * Regexes are Python `re` patterns run by the JS engine (`re.search` = unanchored `test`). The
 * Python-only spellings `(?P<n>…)`, `(?P=n)`, `\A`, `\Z` and leading inline flags `(?i)`, `(?m)`,
 * `(?s)` are translated. Remaining differences: `\d`, `\w`, `\b` and `\s` are ASCII in JS but
 * Unicode-aware in Python; Python's `$` also matches before a final newline; atomic groups and
 * possessive quantifiers do not exist in JS; a pattern JS cannot compile never matches (Python
 * raised an error and dropped the connection).
 */

interface MockRequest {
  method: string;
  /** Absolute URL; origin-form requests are rebuilt as `<scheme>://<Host header><target>`. */
  url: string;
}

/** Python `urllib.parse.urlsplit` of an absolute URL: `netloc` keeps an explicit port, even a default one. */
interface SplitUrl {
  scheme: string;
  netloc: string;
  /** `/` when the URL has no path, as the original's request dict has it. */
  path: string;
  query: string;
}

const ABSOLUTE_URL = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/([^/?#]*)([^?#]*)(?:\?([^#]*))?/;

export function splitUrl(url: string): SplitUrl | null {
  const m = ABSOLUTE_URL.exec(url);
  if (!m) return null;
  return { scheme: (m[1] ?? '').toLowerCase(), netloc: m[2] ?? '', path: m[3] || '/', query: m[4] ?? '' };
}

const PYTHON_LEADING_FLAGS = /^\(\?([aiLmsux]+)\)/;
const PYTHON_ONLY_ESCAPES: Readonly<Record<string, string>> = { '\\A': '^', '\\Z': '$' };

function translatePythonPattern(source: string): { pattern: string; flags: string } {
  let pattern = source;
  let flags = '';
  const leading = PYTHON_LEADING_FLAGS.exec(pattern);
  if (leading) {
    pattern = pattern.slice(leading[0].length);
    for (const flag of leading[1] ?? '') if ('ims'.includes(flag) && !flags.includes(flag)) flags += flag;
  }
  // One pass over escapes and groups, so an escaped backslash before `A` or `(` is left alone.
  pattern = pattern.replace(/\\.|\(\?P<|\(\?P=([A-Za-z_][A-Za-z0-9_]*)\)/g, (token, backref?: string) => {
    if (backref !== undefined) return `\\k<${backref}>`;
    if (token === '(?P<') return '(?<';
    return PYTHON_ONLY_ESCAPES[token] ?? token;
  });
  return { pattern, flags };
}

const compiledPatterns = new Map<string, RegExp | null>();

/** The pattern as a JS RegExp, or null when JS cannot compile it. Memoised: rules are matched per request. */
export function compilePythonPattern(source: string): RegExp | null {
  if (compiledPatterns.has(source)) return compiledPatterns.get(source) ?? null;
  let compiled: RegExp | null;
  try {
    const { pattern, flags } = translatePythonPattern(source);
    compiled = new RegExp(pattern, flags);
  } catch {
    compiled = null;
  }
  compiledPatterns.set(source, compiled);
  return compiled;
}

function searches(source: string, text: string): boolean {
  return compilePythonPattern(source)?.test(text) ?? false;
}

function ruleMatches(rule: MockRule, method: string, url: string, split: SplitUrl | null): boolean {
  const m = rule.match;
  if (m.methods.length > 0 && !m.methods.includes(method.toUpperCase())) return false;
  if (m.url !== undefined && m.url !== url) return false;
  if (m.url_regex !== undefined && !searches(m.url_regex, url)) return false;
  if (m.host !== undefined && m.host !== split?.netloc) return false;
  if (m.path !== undefined && m.path !== split?.path) return false;
  if (m.path_regex !== undefined && !searches(m.path_regex, split?.path ?? '')) return false;
  return true;
}

/** First rule, in array order, whose present criteria all hold; a rule without criteria matches everything. */
export function matchRule(
  rules: readonly MockRule[],
  request: MockRequest,
): { rule: MockRule; index: number } | undefined {
  const split = splitUrl(request.url);
  const index = rules.findIndex((rule) => ruleMatches(rule, request.method, request.url, split));
  const rule = rules[index];
  return rule === undefined ? undefined : { rule, index };
}

/** How a recorded request names the rule that answered it; unnamed rules by their position. */
export function ruleLabel(rule: MockRule, index: number): string {
  return rule.name || `rules[${index}]`;
}

// ---------------------------------------------------------------------------------------------
// Responses

export const JSON_CONTENT_TYPE = 'application/json';
const TEXT_CONTENT_TYPE = 'text/plain; charset=utf-8';

interface RenderedResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

function hasHeader(headers: Record<string, string>, name: string): boolean {
  const lower = name.toLowerCase();
  return Object.keys(headers).some((k) => k.toLowerCase() === lower);
}

function withDefaultContentType(
  headers: Record<string, string>,
  contentType: string | null,
): Record<string, string> {
  if (contentType === null || hasHeader(headers, 'content-type')) return headers;
  return { ...headers, 'content-type': contentType };
}

/**
 * A json or text rule's answer. JSON keeps non-ASCII characters like the original's
 * `ensure_ascii=False`, but is compact (`JSON.stringify`), not Python's `", "`/`": "` spacing.
 */
export function renderStaticResponse(response: MockResponse): RenderedResponse {
  if (response.type === 'text') {
    return {
      status: response.status,
      headers: withDefaultContentType(response.headers, TEXT_CONTENT_TYPE),
      body: response.text,
    };
  }
  return {
    status: response.status,
    headers: withDefaultContentType(response.headers, JSON_CONTENT_TYPE),
    body: JSON.stringify(response.json) ?? 'null',
  };
}

/** What a python handler returned, already reduced by the handler process (§2.5 result dict). */
export interface HandlerResultHead {
  /** null = the rule's status. */
  status: number | null;
  headers: Record<string, string>;
  /** Default content type of the body key the handler used (json/text), null for body_base64 or none. */
  contentType: string | null;
}

/** Status and headers of a python rule's answer: handler headers over rule headers, then the default content type. */
export function handlerResponseHead(
  response: MockResponse,
  result: HandlerResultHead,
): { status: number; headers: Record<string, string> } {
  const headers: Record<string, string> = { ...response.headers };
  for (const [name, value] of Object.entries(result.headers)) {
    for (const existing of Object.keys(headers)) {
      if (existing.toLowerCase() === name.toLowerCase()) delete headers[existing];
    }
    headers[name] = value;
  }
  return {
    status: result.status ?? response.status,
    headers: withDefaultContentType(headers, result.contentType),
  };
}

// ---------------------------------------------------------------------------------------------
// HTTPS interception

/** Whether a rule can only match another origin, certainly names this one, or is origin-independent. */
type Targeting = 'excludes' | 'names' | 'any';

function unescapePattern(source: string): string {
  return source.replace(/\\(.)/g, '$1').toLowerCase();
}

function regexTargeting(source: string, netlocs: readonly string[], hostname: string): Targeting {
  const re = compilePythonPattern(source);
  if (re === null) return 'excludes';
  if (netlocs.some((netloc) => re.test(`https://${netloc}/`))) return 'names';
  const literal = unescapePattern(source);
  if (literal.includes(hostname.toLowerCase())) return 'names';
  // A pattern spelling a scheme separator is tied to origins; it spelled none of this one's.
  return literal.includes('://') ? 'excludes' : 'any';
}

function ruleTargeting(rule: MockRule, hostname: string, port: number): Targeting {
  const netlocs = port === 443 ? [hostname, `${hostname}:443`] : [`${hostname}:${port}`];
  const verdicts: Targeting[] = [];
  const m = rule.match;
  if (m.host !== undefined) verdicts.push(netlocs.includes(m.host) ? 'names' : 'excludes');
  if (m.url !== undefined) {
    const split = splitUrl(m.url);
    verdicts.push(split?.scheme === 'https' && netlocs.includes(split.netloc) ? 'names' : 'excludes');
  }
  if (m.url_regex !== undefined) verdicts.push(regexTargeting(m.url_regex, netlocs, hostname));
  if (verdicts.includes('excludes')) return 'excludes';
  return verdicts.includes('names') ? 'names' : 'any';
}

/**
 * Whether a CONNECT to `hostname:port` is decrypted (TLS man-in-the-middle) so rules apply to it.
 * With passthrough, only origins a rule names by `host`, `url` or `url_regex` are decrypted: every
 * other tunnel stays plain, so clients that do not trust our CA keep working. Without passthrough a
 * tunnel would be refused anyway, so every rule that could match the origin (also path-only rules)
 * is reason enough to decrypt.
 */
export function interceptsHttpsOrigin(config: MockConfig, hostname: string, port: number): boolean {
  const wanted: readonly Targeting[] = config.passthrough ? ['names'] : ['names', 'any'];
  return config.rules.some((rule) => wanted.includes(ruleTargeting(rule, hostname, port)));
}
