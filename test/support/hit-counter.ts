import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One execution of an agent, seen from outside the worker: its start and (if it got there) its end. */
export interface Execution {
  runCaseId: string;
  nonce: string;
  startedAt: number;
  doneAt: number | null;
}

export interface HitCounter {
  server: Server;
  port: number;
  /** `/hit/<run case id>` calls per run case id (one per execution that reached its end). */
  hits: Map<string, number>;
  /** Executions announced by `/start/<id>/<nonce>`, completed by `/done/<id>/<nonce>`. */
  executions: Map<string, Execution[]>;
  close(): Promise<void>;
}

/**
 * Counts agent executions from outside the worker: a case's command calls the counter over
 * `host.docker.internal`, so the count does not depend on our logs or rows. `/hit/<id>` is the plain
 * count; `/start/<id>/<nonce>` and `/done/<id>/<nonce>` (see `countedAgentCommand`) tell
 * executions that were cut from ones that finished.
 */
export function startHitCounter(): Promise<HitCounter> {
  const hits = new Map<string, number>();
  const executions = new Map<string, Execution[]>();
  const server = createServer((req, res) => {
    const [, kind = '', id = '', nonce = ''] = (req.url ?? '').split('/');
    if (kind === 'hit') hits.set(id, (hits.get(id) ?? 0) + 1);
    if (kind === 'start') {
      const list = executions.get(id) ?? [];
      list.push({ runCaseId: id, nonce, startedAt: Date.now(), doneAt: null });
      executions.set(id, list);
    }
    if (kind === 'done') {
      const e = executions.get(id)?.find((x) => x.nonce === nonce);
      if (e) e.doneAt = Date.now();
    }
    res.end('ok');
  });
  return new Promise((resolve) =>
    server.listen(0, '0.0.0.0', () =>
      resolve({
        server,
        port: (server.address() as AddressInfo).port,
        hits,
        executions,
        close: () => new Promise<void>((r) => server.close(() => r())),
      }),
    ),
  );
}

/**
 * A case command (busybox sh) that announces its start, works `sleepSeconds`, announces its end and
 * prints the execution's nonce as its output, so a stored output names the execution it came from.
 */
export function countedAgentCommand(counterPort: number, sleepSeconds: number): string {
  const base = `http://host.docker.internal:${counterPort}`;
  const id = '{{run_case.run_case_id}}';
  return [
    'N=$(cat /proc/sys/kernel/random/uuid)',
    `wget -q -O /dev/null ${base}/start/${id}/$N`,
    `sleep ${sleepSeconds}`,
    `wget -q -O /dev/null ${base}/done/${id}/$N`,
    `echo "{\\"output\\":\\"$N\\"}"`,
  ].join('; ');
}
