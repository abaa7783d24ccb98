import type pg from 'pg';
import type { Config } from '../src/config';
import type { Logger } from '../src/logger';
import type { DockerSandbox } from '../src/docker/docker-sandbox';
import type { ImagePuller } from '../src/docker/image-puller';
import type { Semaphore } from '../src/docker/semaphore';
import type { RunRequestCache } from './run-request-cache';
import type { OtelCollector } from '../src/otel/otel-collector';
import type { MockGatewayManager } from '../src/mock-gateway/case-gateway';

/** The agent's OpenTelemetry data of one case, as trajectory steps (CONTRACT §4.4). */
export interface CaseTelemetry {
  query(runCaseId: number): Promise<{
    steps: unknown[];
    source: 'logs' | 'spans' | 'none';
    usage: { inputTokens: number; outputTokens: number } | null;
  } | null>;
  /** Waits out what remains of the grace period, after the case finished, for late spans. */
  flushGrace(caseFinishedAt: Date): Promise<void>;
}

/** Everything activities touch, injected so tests and the CLI build them against real clients. */
export interface ActivityDeps {
  config: Config;
  log: Logger;
  pool: pg.Pool;
  sandbox: DockerSandbox;
  images: ImagePuller;
  /** DOCKER_MAX_LIVE_CONTAINERS: case containers alive at once in this worker process. */
  liveContainers: Semaphore;
  runRequests: RunRequestCache;
  telemetry: CaseTelemetry;
  collector: OtelCollector;
  /** The collector as case containers reach it (`{{mock.base_url}}` of a case without a gateway). */
  collectorUrl: string;
  gateways: MockGatewayManager;
}
