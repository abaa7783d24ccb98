import { createHash } from 'node:crypto';

/**
 * The dedup suffix shared by the Redis lock keys (CONTRACT §8.1) and the workflow id
 * (ARCHITECTURE §3): the body's message_id, or the SHA-256 hex of the raw body bytes when it is
 * empty, so a re-published body without an id still maps to the same key.
 */
export function dedupSuffix(messageId: string, rawBody: Uint8Array): string {
  return messageId !== '' ? messageId : createHash('sha256').update(rawBody).digest('hex');
}
