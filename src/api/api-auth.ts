import { createHash, timingSafeEqual } from 'node:crypto';
import { isLoopbackHost, type ApiToken } from '../config';
import { ApiError } from './api-errors';

/**
 * Bearer tokens (API_TOKENS may do everything, API_READ_TOKENS only read). The presented token is
 * hashed and compared with every configured digest in constant time, so neither the comparison nor
 * which entry matched leaks through timing, and the secrets themselves are never held in memory.
 */

export interface Principal {
  /** The token's name from the configuration, or `anonymous`: logs and idempotency-key scope. */
  name: string;
  canWrite: boolean;
}

interface AuthSettings {
  tokens: readonly ApiToken[];
  readTokens: readonly ApiToken[];
  allowAnonymous: boolean;
}

const BEARER = /^Bearer ([\x21-\x7e]{1,512})$/;
const challenge = { 'www-authenticate': 'Bearer realm="agentbench"' };

function match(digest: Buffer, tokens: readonly ApiToken[]): ApiToken | undefined {
  let found: ApiToken | undefined;
  for (const t of tokens) if (timingSafeEqual(t.sha256, digest) && !found) found = t;
  return found;
}

/**
 * Who is calling, or an ApiError: 401 without a usable token (anonymous access only from a loopback
 * peer when API_ALLOW_ANONYMOUS — the peer address, never a forwarded header), 403 when a read-only
 * token tries to write.
 */
export function authenticate(
  settings: AuthSettings,
  req: { authorization: string | undefined; remoteAddress: string | undefined; write: boolean },
): Principal {
  let principal: Principal;
  if (req.authorization === undefined) {
    if (!settings.allowAnonymous || !isLoopbackHost(req.remoteAddress ?? '')) {
      throw new ApiError(
        401,
        'E_API_UNAUTHENTICATED',
        'send Authorization: Bearer <token>',
        undefined,
        challenge,
      );
    }
    principal = { name: 'anonymous', canWrite: true };
  } else {
    const m = BEARER.exec(req.authorization);
    if (!m?.[1]) {
      throw new ApiError(
        401,
        'E_API_INVALID_TOKEN',
        'the Authorization header is not "Bearer <token>"',
        undefined,
        challenge,
      );
    }
    const digest = createHash('sha256').update(m[1]).digest();
    const writer = match(digest, settings.tokens);
    const reader = match(digest, settings.readTokens);
    if (writer) principal = { name: writer.name, canWrite: true };
    else if (reader) principal = { name: reader.name, canWrite: false };
    else throw new ApiError(401, 'E_API_INVALID_TOKEN', 'the token is not valid', undefined, challenge);
  }
  if (req.write && !principal.canWrite) {
    throw new ApiError(403, 'E_API_FORBIDDEN', `token ${principal.name} may only read`);
  }
  return principal;
}
