import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { TERMINAL_CASE_STATUSES } from '../domain/case-status';

/**
 * Prometheus metrics of `benchctl worker` and `benchctl bridge` (ARCHITECTURE §5 item 11).
 *
 * Labels are bounded on purpose: activity type, outcome, final case status, error code, OTLP
 * signal, HTTP status. Never a case, experiment, message or workflow id — one series per case
 * would grow without limit and those ids are in the logs and the Temporal UI already.
 */

const METRIC_PREFIX = 'agentbench_';

/** A registry with the standard process/Node.js metrics (`process_*`, `nodejs_*`, unprefixed as dashboards expect). */
export function createMetricsRegistry(opts: { defaultMetrics?: boolean } = {}): Registry {
  const registry = new Registry();
  if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  return registry;
}

export type ActivityOutcome = 'completed' | 'failed' | 'canceled';

/** Slots of a limit (a Semaphore fits): in use, and callers queued for one. */
interface SlotCounts {
  readonly inUse: number;
  readonly waiting: number;
}

interface WorkerGaugeSources {
  dockerOperations: SlotCounts;
  dockerOperationsLimit: number;
  liveContainers: SlotCounts;
  liveContainersLimit: number;
}

type OtelSignalLabel = 'traces' | 'logs' | 'unknown';

interface OtelIngestEvent {
  signal: OtelSignalLabel;
  /** The HTTP status the request was answered with. */
  status: number;
  /** Spans (traces) or log records (logs) stored by the request; 0 when refused. */
  records: number;
}

/** Whatever is not a final case status (a bug, a newer status) is counted, under one label. */
export function caseStatusLabel(status: unknown): string {
  return typeof status === 'string' && (TERMINAL_CASE_STATUSES as readonly string[]).includes(status)
    ? status
    : 'other';
}

/** Error codes are a closed set of `E_…` constants; anything else must not become a new series. */
export function errorCodeLabel(code: unknown): string {
  return typeof code === 'string' && /^E_[A-Z0-9_]{1,64}$/.test(code) ? code : 'E_OTHER';
}

function httpStatusLabel(status: number): string {
  return Number.isInteger(status) && status >= 100 && status <= 599 ? String(status) : 'other';
}

/** Sums the current sources of a gauge; several workers may share one registry (tests do). */
class SourceSet<T> {
  private readonly items = new Set<T>();
  add(item: T): () => void {
    this.items.add(item);
    return () => this.items.delete(item);
  }
  sum(read: (item: T) => number): number {
    let total = 0;
    for (const item of this.items) total += read(item);
    return total;
  }
  first(): T | undefined {
    for (const item of this.items) return item;
    return undefined;
  }
  any(test: (item: T) => boolean): boolean {
    for (const item of this.items) if (test(item)) return true;
    return false;
  }
}

/** Seconds; activities range from a few-ms database write to a case container of many minutes. */
const ACTIVITY_DURATION_BUCKETS = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800,
];
const SCHEDULE_TO_START_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/** The worker's metrics; the activity interceptor, the OTel collector hook and the reaper feed them. */
export class WorkerMetrics {
  readonly registry: Registry;
  private readonly activityDuration: Histogram<'activity' | 'outcome'>;
  private readonly activityExecutions: Counter<'activity' | 'outcome'>;
  private readonly activitiesInFlight: Gauge<'activity'>;
  private readonly scheduleToStart: Histogram<'activity'>;
  private readonly casesFinished: Counter<'status'>;
  private readonly resultCacheLookups: Counter<'outcome'>;
  private readonly otelRequests: Counter<'signal' | 'status'>;
  private readonly otelRecords: Counter<'signal'>;
  private readonly orphansReaped: Counter;
  private readonly sources = new SourceSet<WorkerGaugeSources>();

  constructor(registry: Registry = createMetricsRegistry()) {
    this.registry = registry;
    const registers = [registry];
    this.activityDuration = new Histogram({
      name: `${METRIC_PREFIX}activity_duration_seconds`,
      help: 'Wall time of one activity attempt on this worker, by activity type and outcome.',
      labelNames: ['activity', 'outcome'],
      buckets: ACTIVITY_DURATION_BUCKETS,
      registers,
    });
    this.activityExecutions = new Counter({
      name: `${METRIC_PREFIX}activity_executions_total`,
      help: 'Activity attempts finished on this worker, by activity type and outcome (completed, failed, canceled).',
      labelNames: ['activity', 'outcome'],
      registers,
    });
    this.activitiesInFlight = new Gauge({
      name: `${METRIC_PREFIX}activities_in_flight`,
      help: 'Activity attempts executing on this worker now, by activity type.',
      labelNames: ['activity'],
      registers,
    });
    this.scheduleToStart = new Histogram({
      name: `${METRIC_PREFIX}activity_schedule_to_start_seconds`,
      help: 'Time an activity attempt waited in the task queue before this worker started it (worker saturation).',
      labelNames: ['activity'],
      buckets: SCHEDULE_TO_START_BUCKETS,
      registers,
    });
    this.casesFinished = new Counter({
      name: `${METRIC_PREFIX}cases_finished_total`,
      help: 'Run cases that reached their final status through this worker, by status.',
      labelNames: ['status'],
      registers,
    });
    this.resultCacheLookups = new Counter({
      name: `${METRIC_PREFIX}result_cache_lookups_total`,
      help: 'Result cache lookups of cases whose agent allows reuse, by outcome (hit = no container started).',
      labelNames: ['outcome'],
      registers,
    });
    this.otelRequests = new Counter({
      name: `${METRIC_PREFIX}otel_ingest_requests_total`,
      help: 'OTLP requests answered by the collector (direct or forwarded by a mock gateway), by signal and HTTP status.',
      labelNames: ['signal', 'status'],
      registers,
    });
    this.otelRecords = new Counter({
      name: `${METRIC_PREFIX}otel_records_stored_total`,
      help: 'Spans (signal="traces") and log records (signal="logs") stored by the collector.',
      labelNames: ['signal'],
      registers,
    });
    this.orphansReaped = new Counter({
      name: `${METRIC_PREFIX}orphan_containers_reaped_total`,
      help: 'Case containers removed by the orphan reaper (their case was finished or their run closed).',
      registers,
    });
    const sources = this.sources;
    const gauge = (name: string, help: string, read: (s: WorkerGaugeSources) => number) =>
      new Gauge({
        name: `${METRIC_PREFIX}${name}`,
        help,
        registers,
        collect() {
          this.set(sources.sum(read));
        },
      });
    gauge(
      'docker_operations_in_use',
      'Docker pull/create/start/remove calls in progress (DOCKER_MAX_CONCURRENT_OPERATIONS slots).',
      (s) => s.dockerOperations.inUse,
    );
    gauge(
      'docker_operations_waiting',
      'Docker calls queued for a DOCKER_MAX_CONCURRENT_OPERATIONS slot.',
      (s) => s.dockerOperations.waiting,
    );
    gauge('docker_operations_limit', 'DOCKER_MAX_CONCURRENT_OPERATIONS.', (s) => s.dockerOperationsLimit);
    gauge(
      'live_containers',
      'Case containers alive on this worker (DOCKER_MAX_LIVE_CONTAINERS slots in use).',
      (s) => s.liveContainers.inUse,
    );
    gauge(
      'live_containers_waiting',
      'Cases waiting for a DOCKER_MAX_LIVE_CONTAINERS slot.',
      (s) => s.liveContainers.waiting,
    );
    gauge('live_containers_limit', 'DOCKER_MAX_LIVE_CONTAINERS.', (s) => s.liveContainersLimit);
  }

  /** Reads the worker's limits at every scrape until the returned function is called. */
  observeWorker(sources: WorkerGaugeSources): () => void {
    return this.sources.add(sources);
  }

  /** Call when an attempt starts; call the returned function once with its outcome. */
  activityStarted(
    activity: string,
    scheduleToStartSeconds: number | null,
  ): (outcome: ActivityOutcome) => void {
    if (scheduleToStartSeconds !== null)
      this.scheduleToStart.observe({ activity }, Math.max(0, scheduleToStartSeconds));
    this.activitiesInFlight.inc({ activity });
    const stop = this.activityDuration.startTimer({ activity });
    let ended = false;
    return (outcome) => {
      if (ended) return;
      ended = true;
      stop({ outcome });
      this.activityExecutions.inc({ activity, outcome });
      this.activitiesInFlight.dec({ activity });
    };
  }

  caseFinished(status: unknown, count = 1): void {
    if (count > 0) this.casesFinished.inc({ status: caseStatusLabel(status) }, count);
  }

  resultCacheLookup(outcome: 'hit' | 'miss'): void {
    this.resultCacheLookups.inc({ outcome });
  }

  otelIngest(event: OtelIngestEvent): void {
    this.otelRequests.inc({ signal: event.signal, status: httpStatusLabel(event.status) });
    if (event.records > 0) this.otelRecords.inc({ signal: event.signal }, event.records);
  }

  orphansRemoved(count: number): void {
    if (count > 0) this.orphansReaped.inc(count);
  }
}

type DuplicateReason = 'processed' | 'processing' | 'workflow_exists';

interface BridgeGaugeSource {
  connected(): boolean;
  /** True while deduplication is down to Temporal's workflow ids (Redis unreachable or not configured). */
  redisDegraded(): boolean;
  deliveriesInFlight(): number;
}

/** The bridge's metrics; ExperimentBridge counts into them as it settles each delivery. */
export class BridgeMetrics {
  readonly registry: Registry;
  private readonly received: Counter;
  private readonly started: Counter;
  private readonly duplicates: Counter<'reason'>;
  private readonly deadLettered: Counter<'code'>;
  private readonly startFailures: Counter;
  private readonly reconnects: Counter;
  private readonly sources = new SourceSet<BridgeGaugeSource>();

  constructor(registry: Registry = createMetricsRegistry()) {
    this.registry = registry;
    const registers = [registry];
    this.received = new Counter({
      name: `${METRIC_PREFIX}bridge_messages_received_total`,
      help: 'Deliveries taken from the experiment queue (redeliveries included).',
      registers,
    });
    this.started = new Counter({
      name: `${METRIC_PREFIX}bridge_runs_started_total`,
      help: 'Experiment-run workflows started.',
      registers,
    });
    this.duplicates = new Counter({
      name: `${METRIC_PREFIX}bridge_duplicates_total`,
      help: 'Deliveries acked without a new run: reason="processed"/"processing" (Redis lock), "workflow_exists" (Temporal workflow-id dedup).',
      labelNames: ['reason'],
      registers,
    });
    this.deadLettered = new Counter({
      name: `${METRIC_PREFIX}bridge_dead_lettered_total`,
      help: 'Messages moved to the dead-letter queue, by error code.',
      labelNames: ['code'],
      registers,
    });
    this.startFailures = new Counter({
      name: `${METRIC_PREFIX}bridge_start_failures_total`,
      help: 'Deliveries requeued because the workflow start kept failing (E_WORKFLOW_START_FAILED).',
      registers,
    });
    this.reconnects = new Counter({
      name: `${METRIC_PREFIX}bridge_reconnects_total`,
      help: 'Broker reconnections after a lost connection.',
      registers,
    });
    const sources = this.sources;
    new Gauge({
      name: `${METRIC_PREFIX}bridge_connected`,
      help: '1 while the bridge is consuming from RabbitMQ, 0 while it is (re)connecting.',
      registers,
      collect() {
        this.set(sources.any((s) => s.connected()) ? 1 : 0);
      },
    });
    new Gauge({
      name: `${METRIC_PREFIX}bridge_redis_degraded`,
      help: '1 while Redis locks are unavailable and deduplication relies on Temporal workflow ids only.',
      registers,
      collect() {
        this.set(sources.any((s) => s.redisDegraded()) ? 1 : 0);
      },
    });
    new Gauge({
      name: `${METRIC_PREFIX}bridge_deliveries_in_flight`,
      help: 'Deliveries being validated, deduplicated or started (at most BRIDGE_PREFETCH).',
      registers,
      collect() {
        this.set(sources.sum((s) => s.deliveriesInFlight()));
      },
    });
  }

  /** Reads the bridge's state at every scrape until the returned function is called. */
  observeBridge(source: BridgeGaugeSource): () => void {
    return this.sources.add(source);
  }

  messageReceived(): void {
    this.received.inc();
  }

  runStarted(): void {
    this.started.inc();
  }

  duplicate(reason: DuplicateReason): void {
    this.duplicates.inc({ reason });
  }

  deadLetter(code: string): void {
    this.deadLettered.inc({ code: errorCodeLabel(code) });
  }

  startFailed(): void {
    this.startFailures.inc();
  }

  reconnected(): void {
    this.reconnects.inc();
  }
}

interface ResultEventRelaySource {
  connected(): boolean;
  /** Events in the outbox not yet confirmed by the broker (read at scrape time). */
  pending(): Promise<number>;
}

/**
 * The result-event relay's metrics (src/result-events), in the registry of the process that runs it
 * (`benchctl worker`, `benchctl api`). `pending` is the backlog a broker outage builds up.
 */
export class ResultEventMetrics {
  private readonly publishedTotal: Counter<'type'>;
  private readonly failures: Counter<'side'>;
  private readonly sources = new SourceSet<ResultEventRelaySource>();

  constructor(readonly registry: Registry) {
    const registers = [registry];
    this.publishedTotal = new Counter({
      name: `${METRIC_PREFIX}result_events_published_total`,
      help: 'Result events confirmed by the broker, by type (run_case.finished, experiment_run.finished).',
      labelNames: ['type'],
      registers,
    });
    this.failures = new Counter({
      name: `${METRIC_PREFIX}result_events_relay_failures_total`,
      help: 'Relay rounds that failed and are retried, by side (broker, database).',
      labelNames: ['side'],
      registers,
    });
    const sources = this.sources;
    new Gauge({
      name: `${METRIC_PREFIX}result_events_relay_connected`,
      help: '1 while this process has a connection to the result-event exchange.',
      registers,
      collect() {
        this.set(sources.any((s) => s.connected()) ? 1 : 0);
      },
    });
    let lastPending = 0;
    new Gauge({
      name: `${METRIC_PREFIX}result_events_pending`,
      help: 'Result events in the outbox not yet published (the whole deployment, not just this process).',
      registers,
      async collect() {
        // A scrape while the database is away shows the last known backlog.
        const source = sources.first();
        if (source) lastPending = await source.pending().catch(() => lastPending);
        this.set(lastPending);
      },
    });
  }

  observeRelay(source: ResultEventRelaySource): () => void {
    return this.sources.add(source);
  }

  published(type: string): void {
    this.publishedTotal.inc({
      type: type === 'run_case.finished' || type === 'experiment_run.finished' ? type : 'other',
    });
  }

  relayFailed(side: 'broker' | 'database'): void {
    this.failures.inc({ side });
  }
}

const API_DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** `benchctl api`'s metrics. `route` is the route template (`/v1/runs/:run_id`), never a concrete id. */
export class ApiMetrics {
  readonly registry: Registry;
  private readonly requests: Counter<'route' | 'method' | 'status'>;
  private readonly duration: Histogram<'route' | 'method'>;
  private readonly submissions: Counter<'operation' | 'outcome'>;
  private readonly streams: Gauge;

  constructor(registry: Registry = createMetricsRegistry()) {
    this.registry = registry;
    const registers = [registry];
    this.requests = new Counter({
      name: `${METRIC_PREFIX}api_requests_total`,
      help: 'HTTP requests answered, by route template, method and status.',
      labelNames: ['route', 'method', 'status'],
      registers,
    });
    this.duration = new Histogram({
      name: `${METRIC_PREFIX}api_request_duration_seconds`,
      help: 'Time to answer an HTTP request (for event streams: until the stream ends), by route template and method.',
      labelNames: ['route', 'method'],
      buckets: API_DURATION_BUCKETS,
      registers,
    });
    this.submissions = new Counter({
      name: `${METRIC_PREFIX}api_runs_submitted_total`,
      help: 'Runs submitted over the API (operation create-run or retry-failed; outcome created or replayed by Idempotency-Key).',
      labelNames: ['operation', 'outcome'],
      registers,
    });
    this.streams = new Gauge({
      name: `${METRIC_PREFIX}api_event_streams`,
      help: 'Open GET /v1/runs/{id}/events streams (at most API_MAX_EVENT_STREAMS).',
      registers,
    });
  }

  request(route: string, method: string, status: number, seconds: number): void {
    this.requests.inc({ route, method, status: httpStatusLabel(status) });
    this.duration.observe({ route, method }, seconds);
  }

  submitted(operation: string, replayed: boolean): void {
    this.submissions.inc({ operation, outcome: replayed ? 'replayed' : 'created' });
  }

  streamOpened(): () => void {
    this.streams.inc();
    return () => this.streams.dec();
  }
}
