import { isGrpcServiceError, type Connection } from '@temporalio/client';
import type { SearchAttributeType } from '@temporalio/common';
import { SA } from '../domain/search-attributes';
import { SearchAttributeTypeError } from './errors';

/**
 * Registers our search attributes (src/domain/search-attributes.ts) in a namespace, idempotently:
 * the local dev server on start (dev-server.ts), a production namespace by `benchctl
 * register-search-attributes` (the k8s Job, the compose one-shot service).
 */

export type IndexedValueType = Parameters<
  Connection['operatorService']['addSearchAttributes']
>[0]['searchAttributes'] extends { [k: string]: infer V } | null | undefined
  ? V
  : never;

/** temporal.api.enums.v1.IndexedValueType numbers (@temporalio/proto is not a direct dependency). */
export const INDEXED_VALUE_TYPES: Record<SearchAttributeType, IndexedValueType> = {
  TEXT: 1,
  KEYWORD: 2,
  INT: 3,
  DOUBLE: 4,
  BOOL: 5,
  DATETIME: 6,
  KEYWORD_LIST: 7,
};

// gRPC status code; @grpc/grpc-js is not a direct dependency, so no import for one number.
const GRPC_ALREADY_EXISTS = 6;

interface Registration {
  /** Names this call added. */
  added: string[];
  /** Names that were already there with the right type. */
  present: string[];
}

/**
 * `existing` is the namespace's custom attributes when the caller has just listed them (saves a round
 * trip); otherwise they are listed here.
 */
export async function registerSearchAttributes(
  connection: Connection,
  namespace: string,
  existing?: Record<string, IndexedValueType>,
): Promise<Registration> {
  const current =
    existing ?? (await connection.operatorService.listSearchAttributes({ namespace })).customAttributes ?? {};
  const keys = Object.values(SA);
  const conflicts = keys.flatMap((key) => {
    const have = current[key.name];
    const wantCode = INDEXED_VALUE_TYPES[key.type];
    return have !== undefined && have !== wantCode
      ? [{ name: key.name, want: key.type, wantCode, have }]
      : [];
  });
  if (conflicts.length > 0) throw new SearchAttributeTypeError(conflicts);
  const missing = keys.filter((key) => current[key.name] === undefined);
  const present = keys.filter((key) => current[key.name] !== undefined).map((key) => key.name);
  if (missing.length === 0) return { added: [], present };
  try {
    await connection.operatorService.addSearchAttributes({
      namespace,
      searchAttributes: Object.fromEntries(missing.map((key) => [key.name, INDEXED_VALUE_TYPES[key.type]])),
    });
  } catch (err) {
    // Another process registering them at the same moment is as good as us doing it.
    if (!(isGrpcServiceError(err) && err.code === GRPC_ALREADY_EXISTS)) throw err;
  }
  return { added: missing.map((key) => key.name), present };
}
