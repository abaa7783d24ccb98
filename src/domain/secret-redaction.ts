/**
 * The project's one secret-redaction module: which names are secret, and redaction of structures
 * (DB rows, payloads), URLs (query values, userinfo passwords) and free text (reports, logs), and
 * which values are secret whatever their name (hasUrlSecret: a URL with a password).
 *
 * A name is secret-named by pattern, not by a fixed list: it is split into lower-case words
 * (snake_case, kebab-case, dotted, camelCase), and it is secret when a word is one of SECRET_WORDS,
 * or it is `key`/`keys` alone, or the words run together contain one of SECRET_COMPOUNDS (api_key,
 * x-api-key, secretKey, private_key, accessToken, PGPASSWORD; not `scorer_key` or `cache_key`) — unless a word says the value is a
 * count, limit, kind or location rather than the secret itself (EXEMPT_WORDS: `max_tokens`,
 * `token_count`, `token_type`, `auth_url`, `password_file`). Plural `tokens` is a count in LLM
 * usage, never a credential. Only non-empty strings are replaced (a number under `token` stays), so
 * usage figures are never redacted.
 */

export const REDACTED = '[REDACTED]';

const SECRET_WORDS: ReadonlySet<string> = new Set([
  'password',
  'passwd',
  'pwd',
  'passphrase',
  'secret',
  'secrets',
  'token',
  'credential',
  'credentials',
  'auth',
  'authorization',
  'cookie',
  'bearer',
  'apikey',
  'signature',
]);
/**
 * Run together, a name containing one of these is secret (`x-api-key`, `AWS_ACCESS_KEY_ID`,
 * `signingKey`; `PGPASSWORD`, `CLIENTSECRET`, written as one word). Not `token`: `tokenizer`.
 */
const SECRET_COMPOUNDS = [
  'password',
  'passwd',
  'passphrase',
  'secret',
  'apikey',
  'accesskey',
  'privatekey',
  'secretkey',
  'signingkey',
  'encryptionkey',
  'masterkey',
  'accesstoken',
  'refreshtoken',
];
const EXEMPT_WORDS: ReadonlySet<string> = new Set([
  'count',
  'counts',
  'max',
  'min',
  'num',
  'number',
  'limit',
  'limits',
  'total',
  'usage',
  'length',
  'len',
  'size',
  'budget',
  'type',
  'kind',
  'mode',
  'method',
  'scheme',
  'url',
  'uri',
  'endpoint',
  'name',
  'file',
  'path',
  'env',
  'enabled',
  'required',
  'ttl',
  'expires',
  'expiry',
  'timeout',
]);

/** Lower-case words of a name: `OPENAI_API_KEY`, `x-api-key`, `accessToken`, `APIKey`, `http.auth`. */
function nameWords(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1 $2')
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter((w) => w !== '');
}

/** Names already judged: telemetry repeats the same few dozen attribute keys on every record. */
const secretNameCache = new Map<string, boolean>();
const SECRET_NAME_CACHE_SIZE = 4096;

export function isSecretName(name: string): boolean {
  const known = secretNameCache.get(name);
  if (known !== undefined) return known;
  const secret = judgeName(name);
  if (secretNameCache.size >= SECRET_NAME_CACHE_SIZE) secretNameCache.clear();
  secretNameCache.set(name, secret);
  return secret;
}

function judgeName(name: string): boolean {
  const words = nameWords(name);
  if (words.length === 0 || words.some((w) => EXEMPT_WORDS.has(w))) return false;
  if (words.some((w) => SECRET_WORDS.has(w))) return true;
  // `key` alone is a credential; `scorer_key`, `agent_key`, `cache_key` are identifiers.
  if (words.length === 1 && (words[0] === 'key' || words[0] === 'keys')) return true;
  const compact = words.join('');
  return SECRET_COMPOUNDS.some((c) => compact.includes(c));
}

/** `scheme://user:password@host` */
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/[^\s/?#:@]*):([^\s/?#@]+)@/gi;
/** URL_USERINFO without the global flag: `test` keeps no state between calls. */
const HAS_URL_USERINFO = new RegExp(URL_USERINFO.source, 'i');
/** One `name=value` of a query (or a form body): separator, name, value. */
const QUERY_PARAM = /([?&;])([^=&#;\s?]+)=([^&#;\s]*)/g;

function decodedName(raw: string): string {
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' '));
  } catch {
    return raw;
  }
}

/**
 * Query values of secret-named parameters (`?api_key=…&q=tokyo` → `?api_key=[REDACTED]&q=tokyo`)
 * and the password of a URL's userinfo. Anything else of the URL is kept as it was.
 */
export function redactUrl(url: string): string {
  let out = url.replace(URL_USERINFO, `$1:${REDACTED}@`);
  const query = out.indexOf('?');
  if (query >= 0) {
    const redactedQuery = out
      .slice(query)
      .replace(QUERY_PARAM, (whole, sep: string, name: string, value: string) =>
        value !== '' && isSecretName(decodedName(name)) ? `${sep}${name}=${REDACTED}` : whole,
      );
    out = out.slice(0, query) + redactedQuery;
  }
  return out;
}

/**
 * Whether `value` carries a URL whose userinfo has a password (`postgres://user:pass@host/db`,
 * `redis://:pw@host`): such a value is a secret whatever its name (`DATABASE_URL` is not
 * secret-named). Besides the whole value parsed as a URL, a URL inside it counts too
 * (`jdbc:postgresql://u:p@h/db` parses as a `jdbc:` URL without userinfo; `--db=postgres://u:p@h`
 * does not parse at all). A user name alone (`ssh://git@host`) is not a secret. Never throws.
 */
export function hasUrlSecret(value: string): boolean {
  // Cheap refusal first: callers run this over every string of a run input.
  if (!value.includes('@') || !value.includes(':')) return false;
  try {
    if (new URL(value).password !== '') return true;
  } catch {
    // Not a URL as a whole; it may still hold one.
  }
  return HAS_URL_USERINFO.test(value);
}

/** A string that may hold a URL with a secret: a query with a value, or a userinfo. */
function mayBeSecretUrl(s: string): boolean {
  return (s.includes('?') && s.includes('=')) || (s.includes('://') && s.includes('@'));
}

function redactString(s: string): string {
  if (!mayBeSecretUrl(s) || /\s/.test(s)) return s;
  return redactUrl(s);
}

/** Every non-empty string becomes REDACTED: the value of a secret-named key (a string or a list of them). */
function redactSecretValue(value: unknown): unknown {
  if (typeof value === 'string') return value === '' ? value : REDACTED;
  if (Array.isArray(value)) return value.map((item: unknown) => redactSecretValue(item));
  return redactSecrets(value);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    !ArrayBuffer.isView(value) &&
    !(value instanceof Date)
  );
}

/**
 * Deep copy in which every non-empty string under a secret-named key becomes "[REDACTED]", and URLs
 * in other strings lose their secret query values. Own enumerable properties only, whatever the
 * object's prototype (a decoded map whose `__proto__` key replaced its prototype is still walked),
 * and a `__proto__` key is copied as an own property. Use it on anything that leaves the process as
 * a record: DB rows, logs, reports.
 */
export function redactSecrets<T>(value: T): T;
export function redactSecrets(value: unknown): unknown {
  if (typeof value === 'string') return redactString(value);
  if (Array.isArray(value)) return value.map((item: unknown) => redactSecrets(item));
  if (!isRecord(value)) return value;
  const copy: Record<string, unknown> = {};
  for (const key of Object.keys(value)) {
    const item = value[key];
    const redacted = isSecretName(key) ? redactSecretValue(item) : redactSecrets(item);
    // Assignment to `__proto__` would replace the copy's prototype; any other key is a plain set.
    if (key === '__proto__')
      Object.defineProperty(copy, key, {
        value: redacted,
        enumerable: true,
        writable: true,
        configurable: true,
      });
    else copy[key] = redacted;
  }
  return copy;
}

/** Whether redactSecrets could change anything in `value` (conservative: any secret-named key). */
function mayNeedRedaction(value: unknown): boolean {
  if (typeof value === 'string') return redactString(value) !== value;
  if (Array.isArray(value)) return value.some((item: unknown) => mayNeedRedaction(item));
  if (!isRecord(value)) return false;
  for (const key of Object.keys(value)) {
    if (key === '__proto__' || isSecretName(key) || mayNeedRedaction(value[key])) return true;
  }
  return false;
}

/**
 * redactSecrets, but `value` itself when nothing in it would change: for hot paths (every ingested
 * record's attributes) whose input is already a fresh copy nobody else holds.
 */
export function redactSecretsIfNeeded<T>(value: T): T {
  return mayNeedRedaction(value) ? redactSecrets(value) : value;
}

const NAME = String.raw`[A-Za-z_][A-Za-z0-9_.-]*`;
/** `"api_key": "…"` (JSON, also with escaped quotes inside the value). */
const QUOTED_VALUE = new RegExp(String.raw`"(${NAME})"(\s*:\s*)"((?:[^"\\]|\\.)*)"`, 'g');
/** `api_key=…`, `password: …`, `Authorization: Bearer …` in logs, error texts and URLs. */
const PLAIN_VALUE = new RegExp(
  String.raw`(?<![A-Za-z0-9_.-])(${NAME})(\s*[=:]\s*)((?:Bearer|Basic|Token)\s+)?([^\s"',;&]+)`,
  'g',
);

/** Values of secret-named keys in JSON-ish and `key=value` text, and URL userinfo passwords. */
export function redactSecretText(text: string): string {
  const quoted = text
    .replace(URL_USERINFO, `$1:${REDACTED}@`)
    .replace(QUERY_PARAM, (whole, sep: string, name: string, value: string) =>
      value !== '' && isSecretName(decodedName(name)) ? `${sep}${name}=${REDACTED}` : whole,
    )
    .replace(QUOTED_VALUE, (whole, name: string, colon: string, value: string) =>
      value !== '' && isSecretName(name) ? `"${name}"${colon}"${REDACTED}"` : whole,
    );
  return replacePlainValues(quoted);
}

/**
 * PLAIN_VALUE over `text`. A match whose name is not secret gives its value back to the scan, so in
 * `failed: Authorization: Bearer x` the value `Authorization` is read again as a name.
 */
function replacePlainValues(text: string): string {
  const re = new RegExp(PLAIN_VALUE.source, 'g');
  let out = '';
  let copied = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const [whole, name = '', sep = '', , value = ''] = m;
    if (
      isSecretName(name) &&
      value !== REDACTED &&
      !/^\d+$/.test(value) &&
      !value.startsWith(`"${REDACTED}`)
    ) {
      out += `${text.slice(copied, m.index)}${name}${sep}${REDACTED}`;
      copied = m.index + whole.length;
    } else {
      re.lastIndex = m.index + name.length + sep.length;
    }
  }
  return out + text.slice(copied);
}
