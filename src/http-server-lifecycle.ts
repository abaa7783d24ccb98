import type http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * Listens and resolves with the bound port (`port` 0: one the system picked); a listen error
 * (EADDRINUSE…) rejects. Later server errors are the caller's `'error'` handler's.
 */
export async function listenHttpServer(server: http.Server, port: number, host: string): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

/**
 * Stops accepting, lets in-flight requests finish for up to `graceMs`, then closes every socket
 * (keep-alive clients would otherwise hold `close()` open forever).
 */
export async function closeHttpServer(server: http.Server, graceMs: number): Promise<void> {
  const force = setTimeout(() => server.closeAllConnections(), graceMs);
  try {
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections();
    });
  } finally {
    clearTimeout(force);
  }
}
