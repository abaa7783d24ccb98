import net from 'node:net';

/**
 * A port nothing listens on right now, the kernel's pick on `host` (bound, then closed; the kernel
 * does not hand it out again at once). `0.0.0.0` for a process in the host's network that listens
 * on every interface.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
