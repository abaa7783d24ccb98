import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { PermanentError } from '../domain/errors';
import { isSecretName, REDACTED } from '../domain/secret-redaction';

/**
 * Secrets of a stored run input (agentbench_run_requests.request). The workers run from that row, so
 * it cannot simply lose every credential: a runtime_spec `env` token must still reach the agent. Yet
 * no row may hold a secret in clear (ARCHITECTURE §5 item 10). So, by name pattern (isSecretName):
 *
 * - under `scorers`, a secret is redacted: the judge's api_key is read from the platform's
 *   evaluators row at scoring time (src/scoring/evaluator-secrets.ts), and no other secret of a
 *   scorer_config (an `access_token`, say) is used by the judge at all;
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

/** A copy of `value` with `leaf` applied to every string under a secret-named key (own properties). */
function mapSecretStrings(
  value: unknown,
  leaf: (s: string, path: string, underScorers: boolean) => string,
  path = '',
  underScorers = false,
  underSecret = false,
): unknown {
  if (typeof value === 'string') return underSecret && value !== '' ? leaf(value, path, underScorers) : value;
  if (Array.isArray(value))
    return value.map((item: unknown, i) =>
      mapSecretStrings(item, leaf, `${path}[${i}]`, underScorers, underSecret),
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

/**
 * The run input as it may be stored: see the module comment. `unsealed` lists the paths whose
 * secret was redacted for want of a key (never their values), for a warning.
 */
export function protectRunInput<T extends object>(
  request: T,
  key: Buffer | undefined,
): { request: T; unsealed: string[] } {
  const unsealed: string[] = [];
  const protectedRequest = mapSecretStrings(request, (plain, path, underScorers) => {
    if (underScorers) return REDACTED;
    if (key) return sealSecret(key, plain);
    unsealed.push(path);
    return REDACTED;
  }) as T;
  return { request: protectedRequest, unsealed };
}

/** The stored run input with its sealed secrets opened, for the workers. Throws RunInputSecretsError. */
export function revealRunInput<T extends object>(request: T, key: Buffer | undefined): T {
  return mapSecretStrings(request, (stored, path) =>
    isSealed(stored) ? openSecret(key, stored, path) : stored,
  ) as T;
}
