import type http from 'node:http';

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
