import type Dockerode from 'dockerode';

/** `POST /containers/:id/start`: the request line with ids and names folded away. */
function callKind(options: { method?: string; path?: string }): string {
  const path = (options.path ?? '').replace(/\?.*$/, '');
  const folded = path
    .replace(/^\/images\/.+\/json$/, '/images/:name/json')
    .replace(/^\/(containers|exec|networks)\/(?!create$|json$)[^/]+/, '/$1/:id');
  return `${options.method ?? 'GET'} ${folded}`;
}

/**
 * Counts every Docker API request made through `docker` (dockerode sends them all through its
 * modem's dial), by kind, from now on.
 */
export function countDockerCalls(docker: Dockerode): {
  reset(): void;
  snapshot(): Map<string, number>;
} {
  let counts = new Map<string, number>();
  const modem = docker.modem as unknown as {
    dial: (options: Record<string, unknown>, cb: unknown) => unknown;
  };
  const dial = modem.dial.bind(modem);
  modem.dial = (options, callback) => {
    const kind = callKind(options as { method?: string; path?: string });
    counts.set(kind, (counts.get(kind) ?? 0) + 1);
    return dial(options, callback);
  };
  return {
    reset: () => (counts = new Map()),
    snapshot: () => new Map(counts),
  };
}

/** `Docker calls per case: 7.00 (POST /containers/create 1.00, …)`, most frequent first. */
export function perCaseText(counts: Map<string, number>, cases: number): string {
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  const parts = [...counts]
    .sort((a, b) => b[1] - a[1])
    .map(([kind, n]) => `${kind} ${(n / cases).toFixed(2)}`);
  return `Docker calls per case: ${(total / cases).toFixed(2)} (${parts.join(', ')})`;
}
