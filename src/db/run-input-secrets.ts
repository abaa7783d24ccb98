import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { PermanentError } from '../domain/errors';
import { hasUrlSecret, isSecretName, REDACTED, redactUrl } from '../domain/secret-redaction';

/**
 * Secrets of a stored run input (agentbench_run_requests.request). The workers run from that row, so
 * it cannot simply lose every credential: a runtime_spec `env` token must still reach the agent. Yet
 * no row may hold a secret in clear (ARCHITECTURE §5 item 10). A secret is a string under a
 * secret-named key (isSecretName), or any string carrying a URL with a password (hasUrlSecret:
 * `DATABASE_URL=postgres://user:pass@host/db` is no secret by name). Then:
 *
 * - under `scorers`, a secret is redacted: the judge's api_key is read from the platform's
 *   evaluators row at scoring time (src/scoring/evaluator-secrets.ts), and no other secret of a
 *   scorer_config (an `access_token`, say) is used by the judge at all; a URL loses only its
 *   password (redactUrl), so the rest of, say, a `base_url` stays readable;
 * - anywhere else (the agent's runtime_spec_json), a secret is sealed with AES-256-GCM under
 *   AGENTBENCH_SECRETS_KEY and opened again when a worker loads the run; without a key it is
 *   redacted, and the caller is told which paths lost their value.
 */

const SEALED_PREFIX = 'enc:v1:';
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** Binds a sealed value to its purpose: a ciphertext made for another use of the key never opens here. */
const AAD = Buffer.from('agentbench run input secret v1');

/** A sealed value cannot be opened: no key, another key, or a damaged value. The run cannot go on. */
export class RunInputSecretsError extends PermanentError {
  readonly code = 'E_RUN_INPUT_SECRETS_UNREADABLE';
  constructor(detail: string) {
    super(`E_RUN_INPUT_SECRETS_UNREADABLE: ${detail}`);
    this.name = 'RunInputSecretsError';
  }
}

function sealSecret(key: Buffer, plain: string): string {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(AAD);
  const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
  return SEALED_PREFIX + Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64');
}

export function isSealed(value: string): boolean {
  return value.startsWith(SEALED_PREFIX);
}

function openSecret(key: Buffer | undefined, sealed: string, path: string): string {
  if (!key) throw new RunInputSecretsError(`${path} is sealed and AGENTBENCH_SECRETS_KEY is not set`);
  const raw = Buffer.from(sealed.slice(SEALED_PREFIX.length), 'base64');
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, IV_BYTES));
    decipher.setAAD(AAD);
    decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
    return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString(
      'utf8',
    );
  } catch {
    throw new RunInputSecretsError(`${path} does not open with this AGENTBENCH_SECRETS_KEY`);
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

type Leaf = (s: string, path: string, underScorers: boolean, secretNamed: boolean) => string;

/**
 * A copy of `value` with `leaf` applied to every non-empty string under a secret-named key, and to
 * every other string for which `secretValue` holds (own properties).
 */
function mapSecretStrings(
  value: unknown,
  leaf: Leaf,
  secretValue: (s: string) => boolean,
  path = '',
  underScorers = false,
  underSecret = false,
): unknown {
  if (typeof value === 'string') {
    if (value === '') return value;
    if (underSecret) return leaf(value, path, underScorers, true);
    return secretValue(value) ? leaf(value, path, underScorers, false) : value;
  }
  if (Array.isArray(value))
    return value.map((item: unknown, i) =>
      mapSecretStrings(item, leaf, secretValue, `${path}[${i}]`, underScorers, underSecret),
    );
  if (!isRecord(value)) return value;
  const copy: Record<string, unknown> = {};
  for (const key of Object.keys(value)) {
    const item = value[key];
    const itemPath = path === '' ? key : `${path}.${key}`;
    // Strings directly under (or in a list under) a secret-named key; objects are walked by name again.
    const secret = isSecretName(key) && (typeof item === 'string' || Array.isArray(item));
    Object.defineProperty(copy, key, {
      value: mapSecretStrings(
        item,
        leaf,
        secretValue,
        itemPath,
        underScorers || (path === '' && key === 'scorers'),
        secret,
      ),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return copy;
}

/** A scorer's URL without its password; REDACTED when redactUrl cannot take it out. */
function redactedScorerUrl(plain: string): string {
  const redacted = redactUrl(plain);
  // The marker is a password itself to hasUrlSecret; what must not remain is any other one.
  return hasUrlSecret(redacted.split(REDACTED).join('')) ? REDACTED : redacted;
}

/**
 * The run input as it may be stored: see the module comment. `unsealed` lists the paths whose
 * secret was redacted for want of a key (never their values), for a warning.
 *
 * A string that only looks sealed is sealed too (with a key), though not secret: revealRunInput
 * opens every sealed-looking string, whatever its key, so it must get back exactly this string.
 */
export function protectRunInput<T extends object>(
  request: T,
  key: Buffer | undefined,
): { request: T; unsealed: string[] } {
  const unsealed: string[] = [];
  const protectedRequest = mapSecretStrings(
    request,
    (plain, path, underScorers, secretNamed) => {
      if (underScorers) return secretNamed || !hasUrlSecret(plain) ? REDACTED : redactedScorerUrl(plain);
      if (key) return sealSecret(key, plain);
      unsealed.push(path);
      return REDACTED;
    },
    (s) => hasUrlSecret(s) || isSealed(s),
  ) as T;
  return { request: protectedRequest, unsealed };
}

/**
 * The stored run input with its sealed secrets opened, for the workers: under any key, since a URL
 * with a password is sealed whatever its name. Throws RunInputSecretsError.
 */
export function revealRunInput<T extends object>(request: T, key: Buffer | undefined): T {
  return mapSecretStrings(
    request,
    (stored, path) => (isSealed(stored) ? openSecret(key, stored, path) : stored),
    isSealed,
  ) as T;
}
