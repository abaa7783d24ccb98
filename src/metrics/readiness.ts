import { errorText } from '../domain/errors';

/**
 * `GET /readyz` of a long-running command: whether it can do its work now, by checking the services
 * it depends on (the worker: Temporal, Postgres, Docker; the bridge: Temporal, RabbitMQ, Postgres).
 * Kubernetes' readiness probe reads it; liveness is `/healthz`, which never looks at dependencies
 * (a database outage must not restart every pod).
 *
 * Not ready while starting (before the connections exist) and from the stop signal on, so a rollout
 * waits for the new pod and a draining one is visibly on its way out.
 */

/** Resolves when the dependency answers; rejects (or times out) when it does not. */
export type ReadinessCheck = () => Promise<void>;

export type ReadinessState = 'starting' | 'ready' | 'not_ready' | 'stopping';

export interface CheckResult {
  ok: boolean;
  /** The failure, one line, cut short (no secrets: connection errors name hosts, never passwords). */
  error?: string;
}

export interface ReadinessReport {
  status: ReadinessState;
  checks: Record<string, CheckResult>;
}

const DEFAULT_TIMEOUT_MS = 3_000;
const MAX_ERROR_CHARS = 300;

function errorLine(err: unknown): string {
  const line = errorText(err).split('\n')[0] ?? '';
  return line.length > MAX_ERROR_CHARS ? `${line.slice(0, MAX_ERROR_CHARS)}…` : line;
}

async function runCheck(check: ReadinessCheck, timeoutMs: number): Promise<CheckResult> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    await Promise.race([check(), timeout]);
    return { ok: true };
  } catch (err) {
    return { ok: false, error: errorLine(err) };
  } finally {
    clearTimeout(timer);
  }
}

export class Readiness {
  private checks: Readonly<Record<string, ReadinessCheck>> | null = null;
  private stopping = false;
  /** Probes arriving while one runs share its answer: a probe storm is one round of checks. */
  private running: Promise<ReadinessReport> | null = null;

  constructor(private readonly timeoutMs = DEFAULT_TIMEOUT_MS) {}

  /** From now on, /readyz runs these checks (all at once, each bounded by the timeout). */
  serve(checks: Readonly<Record<string, ReadinessCheck>>): void {
    this.checks = checks;
  }

  /** The stop signal arrived: not ready from now on, whatever the dependencies say. */
  markStopping(): void {
    this.stopping = true;
  }

  report(): Promise<ReadinessReport> {
    if (this.stopping) return Promise.resolve({ status: 'stopping', checks: {} });
    const checks = this.checks;
    if (!checks) return Promise.resolve({ status: 'starting', checks: {} });
    this.running ??= this.evaluate(checks).finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async evaluate(checks: Readonly<Record<string, ReadinessCheck>>): Promise<ReadinessReport> {
    const names = Object.keys(checks);
    const results = await Promise.all(
      names.map((name) => runCheck(checks[name] as ReadinessCheck, this.timeoutMs)),
    );
    const byName: Record<string, CheckResult> = {};
    names.forEach((name, i) => (byName[name] = results[i] as CheckResult));
    if (this.stopping) return { status: 'stopping', checks: byName };
    return { status: results.every((r) => r.ok) ? 'ready' : 'not_ready', checks: byName };
  }
}
