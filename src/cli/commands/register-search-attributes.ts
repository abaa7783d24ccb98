import { Connection, isGrpcServiceError } from '@temporalio/client';
import { SA } from '../../domain/search-attributes';
import { errorText } from '../../domain/errors';
import { SearchAttributeTypeError } from '../../temporal/errors';
import { registerSearchAttributes } from '../../temporal/search-attribute-registration';
import { CliError, loadConfigOrExit } from '../process-context';

const RETRY_INTERVAL_MS = 2_000;
const CALL_TIMEOUT_MS = 10_000;
// gRPC status codes worth waiting out while a server (and its namespace) comes up.
const GRPC_NOT_FOUND = 5;
const GRPC_UNAVAILABLE = 14;
const GRPC_DEADLINE_EXCEEDED = 4;

function transient(err: unknown): boolean {
  if (!isGrpcServiceError(err)) return true; // connection-level failures: nothing answered yet
  return [GRPC_NOT_FOUND, GRPC_UNAVAILABLE, GRPC_DEADLINE_EXCEEDED].includes(err.code);
}

/**
 * `benchctl register-search-attributes`: registers our search attributes in TEMPORAL_NAMESPACE,
 * idempotently (present ones are left alone; one of another type is an error). Waits up to
 * `--wait` seconds for the server and the namespace to appear, so a k8s Job or a compose one-shot
 * service may start together with Temporal.
 */
export async function registerSearchAttributesCommand(opts: { wait: number }): Promise<void> {
  const config = loadConfigOrExit();
  const { address, namespace } = config.temporal;
  const deadline = Date.now() + opts.wait * 1000;
  let lastReason = '';
  for (;;) {
    let connection: Connection | null = null;
    try {
      connection = await Connection.connect({ address, connectTimeout: CALL_TIMEOUT_MS });
      const conn = connection;
      const { added, present } = await conn.withDeadline(Date.now() + CALL_TIMEOUT_MS, () =>
        registerSearchAttributes(conn, namespace),
      );
      process.stdout.write(
        `search attributes in namespace ${namespace} at ${address}: ${added.length > 0 ? `registered ${added.join(', ')}` : 'nothing to register'}` +
          `${present.length > 0 ? `; already present: ${present.join(', ')}` : ''} (${Object.keys(SA).length} in all)\n`,
      );
      return;
    } catch (err) {
      if (err instanceof SearchAttributeTypeError) throw new CliError(err.message);
      if (!transient(err) || Date.now() >= deadline) {
        throw new CliError(
          `cannot register search attributes in namespace ${namespace} at ${address}: ${errorText(err)}`,
        );
      }
      const reason = errorText(err);
      if (reason !== lastReason)
        process.stderr.write(`waiting for Temporal at ${address} (namespace ${namespace}): ${reason}\n`);
      lastReason = reason;
    } finally {
      await connection?.close();
    }
    await new Promise((resolve) => setTimeout(resolve, RETRY_INTERVAL_MS));
  }
}
