import { Context } from '@temporalio/activity';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { setTimeout as delay } from 'node:timers/promises';
import { isTerminalStatus } from '../src/domain/case-status';
import type { CaseExecutionSummary, CaseRef, ExecuteCaseInput } from '../src/domain/activity-contract';
import { errorText } from '../src/domain/errors';
import { anyScorerCallsJudge } from '../src/domain/judge-score';
import { CONTAINER_LOG_TAIL_CHARS } from '../src/domain/case-logs';
import type { ExperimentRunRequested } from '../src/domain/message';
import {
  saveCaseResult,
  type CaseRawResult,
  type CaseTrajectory,
  type StoredCaseResult,
} from '../src/db/case-result-repository';
import { loadCaseStart } from '../src/db/case-start-repository';
import { recordRunEnd } from '../src/db/result-event-outbox';
import { transitionCaseStatus } from '../src/db/run-case-repository';
import type {
  AdoptableContainer,
  AgentReadyParams,
  CaseContainerSpec,
  ExecParams,
  ExecResult,
  PredecessorContainer,
  StartedContainer,
} from '../src/docker/docker-sandbox';
import type { ResolvedCaseSpec } from '../src/domain/runtime-spec';
import type { RunCaseInput } from '../src/domain/message';
import { parseCaseInput } from '../src/db/run-request-cache';
import type { OwnershipVerdict } from '../src/docker/orphan-reaper';
import type { Logger } from '../src/logger';
import { caseActivity } from './activity-boundary';
import type { WarmSandbox, WarmSandboxTemplate } from '../src/docker/warm-pool';
import {
  caseContainerSpec,
  renderCaseCommands,
  warmSandboxTemplate,
  type CaseCommands,
} from './case-container-spec';
import { afterCommandLost, caseRecord, failedBeforeExec } from './case-record';
import type { CaseResultSpool, SpooledRecord } from './case-result-spool';
import {
  adoptCaseNetwork,
  caseNetworkPlan,
  openCaseNetwork,
  type CaseNetwork,
  type CaseNetworkDeps,
} from './case-network';
import { rideOutOutage } from './infra-outage';
import { createCaseFinalizer, type CaseFinalizationDeps } from './case-finalization';
import { computeTrajectory } from './case-trajectory';
import { planTaskCase, reuseCachedResult, type TaskCaseDeps, type TaskCasePlan } from './task-case';
import { createCaseLeftovers } from './case-attempt-leftovers';

/** Also how fast a cancel reaches a running case: cancellations are delivered in heartbeat responses. */
export const HEARTBEAT_INTERVAL_MS = 2_000;

/** One fresh container per case and what the case does in it (src/docker/docker-sandbox). */
export interface CaseSandbox {
  createAndStart(spec: CaseContainerSpec): Promise<StartedContainer>;
  /** The case command, re-run while the agent is not ready within the container's startup window. */
  execUntilAgentReady(container: StartedContainer, p: AgentReadyParams): Promise<ExecResult>;
  exec(containerId: string, p: ExecParams): Promise<ExecResult>;
  logs(containerId: string, tailChars: number): Promise<string>;
  remove(containerIdOrName: string): Promise<void>;
  listManagedContainers(filter: {
    workflowId: string;
    runCaseId: number;
  }): Promise<Array<{ id: string; labels: Record<string, string>; networks: string[] }>>;
  /** A killed predecessor's container: may this attempt adopt it (its case command recorded there)? */
  inspectPredecessor(containerId: string): Promise<PredecessorContainer>;
  /** The adopted case command's outcome: waited for within `timeoutMs`, past it killed (timedOut). */
  awaitCaseCommand(
    container: AdoptableContainer,
    p: { timeoutMs: number; signal?: AbortSignal },
  ): Promise<ExecResult>;
  /** Whether a command that died of a signal was stopped from outside the agent (DockerSandbox). */
  stoppedFromOutside(containerId: string): Promise<boolean>;
}

/** DOCKER_MAX_LIVE_CONTAINERS: case containers alive at once in this worker process. */
export interface ContainerSlots {
  run<T>(fn: () => Promise<T>): Promise<T>;
}

export interface CaseExecutionDeps extends CaseFinalizationDeps, CaseNetworkDeps, TaskCaseDeps {
  sandbox: CaseSandbox;
  liveContainers: ContainerSlots;
  /** Holds a finished case's record until Postgres does (case-result-spool.ts). */
  spool: CaseResultSpool;
  /**
   * Tests only (AGENTBENCH_FAULT_PAUSE_AFTER_CASE_EXEC_MS): how long an attempt stands still right
   * after its case command returned and was spooled, so a test can kill the worker in that window.
   */
  pauseAfterCaseExecMs?: number;
  /**
   * Is this case still wanted (its row active, its workflow running)? Asked while an attempt runs on
   * that Temporal gave up on: `orphan` (the run was terminated, the case closed) stops it; `unknown`
   * (Temporal or Postgres away) keeps it. Absent: such an attempt runs to its end.
   */
  caseWanted?: (ref: CaseRef) => Promise<OwnershipVerdict>;
  /** Shared with the spool sweep (absent: this execution's own). */
  liveAttempts?: LiveAttempts;
  /** SANDBOX_WARM_POOL_SIZE > 0: warm containers a case may claim instead of creating its own. */
  warmPool?: { claim(template: WarmSandboxTemplate): WarmSandbox | undefined };
}

/** How often an attempt Temporal gave up on asks whether its case is still wanted. */
const ORPHAN_CHECK_INTERVAL_MS = 5_000;

/**
 * A container phase running in this process. Temporal may give up on it while it runs (its
 * heartbeat lapsed because Temporal was away) and schedule the next attempt, often on this same
 * worker: that attempt finds it here and waits for its outcome instead of starting the agent again.
 */
interface LiveAttempt {
  attempt: number;
  outcome: Promise<CaseExecutionSummary>;
  /** Stops the attempt: a real cancel or the worker's shutdown, passed on by a joined successor too. */
  stop: AbortController;
}

/**
 * The container phases running in this process, by case. Shared with the spool sweep, which must
 * never store the record of an attempt still running here (its after command, its removal).
 */
export class LiveAttempts {
  private readonly byCase = new Map<string, LiveAttempt>();
  private static key(workflowId: string, runCaseId: number): string {
    return `${workflowId}\n${runCaseId}`;
  }
  get(workflowId: string, runCaseId: number): LiveAttempt | undefined {
    return this.byCase.get(LiveAttempts.key(workflowId, runCaseId));
  }
  has(workflowId: string, runCaseId: number): boolean {
    return this.byCase.has(LiveAttempts.key(workflowId, runCaseId));
  }
  set(workflowId: string, runCaseId: number, entry: LiveAttempt): void {
    this.byCase.set(LiveAttempts.key(workflowId, runCaseId), entry);
  }
  /** Only if it is still this entry: a successor may have taken the case's place. */
  release(workflowId: string, runCaseId: number, entry: LiveAttempt): void {
    const key = LiveAttempts.key(workflowId, runCaseId);
    if (this.byCase.get(key) === entry) this.byCase.delete(key);
  }
}

/**
 * What a container phase's heartbeats say, and what the next attempt finds of them: the phase it
 * was in (`waiting_for_container_slot`, `case_exec`, `after_exec`, `collect`, `exited` once the
 * agent is done and its record spooled, `persisting`) and the container, for the retry to remove.
 */
interface HeartbeatDetails {
  containerId?: string;
  phase?: string;
}

/** A step that waits out a Docker or Postgres outage, heartbeating (infra-outage.ts). */
type RideOut = <T>(what: string, fn: () => Promise<T>) => Promise<T>;

/** One attempt of the container phase, as its steps share it. */
interface Attempt {
  ctx: Context;
  ref: ExecuteCaseInput;
  attempt: number;
  log: Logger;
  /** A real cancel or the worker's shutdown (attemptStop), or the case no longer wanted. */
  stopSignal: AbortSignal;
  /** When the attempt began: its record's containerPhaseMs counts from here. */
  phaseStart: number;
  /** What its heartbeats say (HeartbeatDetails), kept current by the steps. */
  progress: { phase: string; containerId: string | undefined };
  heartbeat(): void;
  rideOut: RideOut;
}

/** A case this attempt goes on to run (or adopt): its run request, input and plan (task-case.ts). */
interface PlannedCase {
  kind: 'planned';
  request: ExperimentRunRequested;
  caseInput: RunCaseInput;
  plan: TaskCasePlan;
  spec: ResolvedCaseSpec;
}

/** What the first step found: a planned case, or why this attempt runs no agent. */
type AttemptStart =
  | PlannedCase
  /** An earlier attempt's record is stored already. */
  | { kind: 'stored'; stored: StoredCaseResult; request: ExperimentRunRequested }
  /** The case was closed (or is gone). */
  | { kind: 'not_active' }
  /** An earlier attempt on this host spooled its record but did not store it. */
  | { kind: 'spooled'; spooled: SpooledRecord; request: ExperimentRunRequested }
  /** The run's runtime spec is unusable. */
  | { kind: 'no_spec'; specError: Error };

/** What a case's container needs, ready before it takes a container slot. */
interface PreparedSandbox {
  kind: 'ready';
  /** A claimed warm pool container (SANDBOX_WARM_POOL_SIZE), given up if the case does not start in it. */
  warm: WarmSandbox | undefined;
  network: CaseNetwork;
  commands: CaseCommands;
}

/** A planned case with all it needs to take a container slot: steps 2 to 4 run on it. */
interface SandboxedCase {
  planned: PlannedCase;
  /** The killed worker's container whose case command this attempt takes over (null: none). */
  adopted: AdoptableContainer | null;
  /** The case's start: an adopted command's own, else this attempt's. */
  startedAt: Date;
  sandbox: PreparedSandbox;
}

/** A stored record and its summary, for the inline finish. */
interface Persisted {
  stored: StoredCaseResult;
  summary: CaseExecutionSummary;
}

/**
 * The fast path for a case with nothing left to wait for (no judge to call, telemetry complete):
 * trajectory and final persist run in the container phase, the same idempotent code as their own
 * activities, which saves the workflow two activities and their workflow tasks per case — most of
 * what a trivial case costs Temporal (bench/sandbox-overhead). Best effort: if it fails, the workflow
 * runs the phases as activities, with their own retries; the agent never runs again either way.
 */
export function createInlineFinisher(deps: CaseFinalizationDeps) {
  const finalizeFromPhases = createCaseFinalizer(deps);
  return async function finishInline(
    ref: ExecuteCaseInput,
    stored: StoredCaseResult,
    summary: CaseExecutionSummary,
    log: Logger,
  ): Promise<CaseExecutionSummary> {
    if (!inlineEligible(ref, stored.result, summary)) return summary;
    try {
      const finalized = await finalizeFromPhases(
        { ...ref, notExecutedError: null },
        { ...stored, scores: null },
      );
      return { ...summary, finalized };
    } catch (err) {
      log.warn(
        { code: 'CASE_INLINE_FINALIZE_FAILED', err: errorText(err) },
        'finishing the case in the container phase failed; the workflow runs trajectory and finalize as activities',
      );
      return summary;
    }
  };
}

function inlineEligible(
  ref: Pick<ExecuteCaseInput, 'finishInline'>,
  raw: CaseRawResult,
  summary: CaseExecutionSummary,
): boolean {
  return ref.finishInline === true && !summary.needsJudge && raw.telemetryComplete === true;
}

/**
 * Stores the container phase's record; on the fast path with the trajectory, collected first (one
 * write instead of two). Nothing may keep the record from being stored: if collecting fails, the
 * record goes in without it and the trajectory is collected later like any other.
 */
export async function storeCaseResult(
  deps: CaseFinalizationDeps,
  ref: ExecuteCaseInput,
  raw: CaseRawResult,
  summary: CaseExecutionSummary,
  log: Logger,
): Promise<StoredCaseResult> {
  let trajectory: CaseTrajectory | null = null;
  if (inlineEligible(ref, raw, summary)) {
    try {
      // running → trajectory before the OTel query, as the trajectory phase does (CONTRACT §3.2).
      await transitionCaseStatus(deps.pool, {
        experimentId: ref.experimentId,
        runCaseId: ref.runCaseId,
        to: 'trajectory',
      });
      trajectory = await computeTrajectory(deps, ref.runCaseId, raw);
    } catch (err) {
      log.warn(
        { code: 'CASE_INLINE_FINALIZE_FAILED', err: errorText(err) },
        'collecting the trajectory in the container phase failed; it is collected after the record is stored',
      );
    }
  }
  return saveCaseResult(deps.pool, ref.workflowId, ref.runCaseId, raw, trajectory);
}

/**
 * The container phase of one case: fresh container, case command (+ after command), output, logs.
 * Its complete record is stored before it returns, so neither a retry of this activity nor a later
 * phase ever runs the agent a second time. Agent failures and timeouts are results, not errors;
 * only infrastructure errors are thrown (and retried by Temporal).
 */
export function createCaseExecution(deps: CaseExecutionDeps) {
  const { pool, sandbox } = deps;
  const finishInline = createInlineFinisher(deps);
  const live = deps.liveAttempts ?? new LiveAttempts();
  const leftoversOf = createCaseLeftovers(deps);

  async function executeCase(ref: ExecuteCaseInput): Promise<CaseExecutionSummary> {
    const ctx = Context.current();
    const attempt = ctx.info.attempt;
    const log = deps.log.child({
      workflow_id: ref.workflowId,
      experiment_id: ref.experimentId,
      run_case_id: ref.runCaseId,
      attempt,
    });
    const predecessor = live.get(ref.workflowId, ref.runCaseId);
    if (predecessor) {
      const joined = await joinPredecessor(ctx, predecessor, log);
      if (joined) return joined;
    }
    let stopWatching: (() => void) | undefined;
    const stop = attemptStop(ctx, log, (controller) => {
      stopWatching = watchWhileOrphaned(ref, controller, log);
    });
    const entry: LiveAttempt = { attempt, stop, outcome: runAttempt(ctx, ref, log, stop.signal) };
    live.set(ref.workflowId, ref.runCaseId, entry);
    try {
      return await entry.outcome;
    } finally {
      stopWatching?.();
      live.release(ref.workflowId, ref.runCaseId, entry);
    }
  }

  /**
   * An attempt Temporal gave up on keeps its agent running (a retry here joins it), but not for a
   * case nobody wants any more: a terminated run's containers must go, not run to their timeout.
   */
  function watchWhileOrphaned(ref: CaseRef, stop: AbortController, log: Logger): () => void {
    const caseWanted = deps.caseWanted;
    if (!caseWanted) return () => undefined;
    let asking = false;
    const timer = setInterval(() => {
      if (asking || stop.signal.aborted) return;
      asking = true;
      caseWanted(ref)
        .then(
          (v) => {
            if (v.verdict !== 'orphan' || stop.signal.aborted) return;
            log.warn(
              { code: 'CASE_ATTEMPT_ABANDONED', reason: v.reason },
              'the case of an attempt Temporal gave up on is no longer wanted; stopping it',
            );
            stop.abort(new CancelledFailure(`case no longer wanted: ${v.reason}`));
          },
          () => undefined,
        )
        .finally(() => {
          asking = false;
        });
    }, ORPHAN_CHECK_INTERVAL_MS);
    return () => clearInterval(timer);
  }

  /**
   * Waits, heartbeating, for an earlier attempt of the same case still running in this process; its
   * outcome is this attempt's. null when it failed: this attempt then goes on as usual and finds
   * what it left (stored record, spool).
   */
  async function joinPredecessor(
    ctx: Context,
    predecessor: LiveAttempt,
    log: Logger,
  ): Promise<CaseExecutionSummary | null> {
    log.info(
      { code: 'CASE_ATTEMPT_JOINED', from_attempt: predecessor.attempt },
      'an earlier attempt of this case still runs in this worker; waiting for it, the agent is not started again',
    );
    const beat = setInterval(
      () => ctx.heartbeat({ phase: 'joined' } satisfies HeartbeatDetails),
      HEARTBEAT_INTERVAL_MS,
    );
    const passOn = () => {
      if (stopsTheAttempt(ctx)) predecessor.stop.abort(ctx.cancellationSignal.reason);
    };
    ctx.cancellationSignal.addEventListener('abort', passOn, { once: true });
    try {
      return await predecessor.outcome;
    } catch (err) {
      if (ctx.cancellationSignal.aborted && stopsTheAttempt(ctx)) throw stopFailure(ctx);
      log.warn(
        { code: 'CASE_ATTEMPT_JOIN_FAILED', err: errorText(err) },
        'the earlier attempt failed; this one goes on from what it left',
      );
      return null;
    } finally {
      clearInterval(beat);
      ctx.cancellationSignal.removeEventListener('abort', passOn);
    }
  }

  /**
   * One attempt of the container phase, in its steps:
   *   1. loadAndPlan: the case, its run request and its plan — or why no agent runs (endEarly);
   *      what earlier attempts left is settled right after, in one place (leftoversOf.settle: one
   *      adopted by a planned case, every other removed). runPlanned then checks the retry budget
   *      and the result cache (reuseFromCache) and marks the case running;
   *   2. prepareSandbox, obtainContainer: the container adopted, warm or cold, with its network;
   *   3. execAndSpool: the case command, its record spooled at once, the after command;
   *   4. collectLogs, the container removed, the case network closed (inContainer, containerPhase);
   *   5. persist, then the fast path's inline finish (finishInline).
   */
  async function runAttempt(
    ctx: Context,
    ref: ExecuteCaseInput,
    log: Logger,
    stopSignal: AbortSignal,
  ): Promise<CaseExecutionSummary> {
    const a = beginAttempt(ctx, ref, log, stopSignal);
    // A previous attempt may have died with its container alive (worker killed): it is adopted
    // below, or removed. (A first attempt has no predecessor; a leftover of its fixed name is
    // replaced by createAndStart.)
    const previous = ctx.info.heartbeatDetails as HeartbeatDetails | undefined;
    const leftovers = a.attempt > 1 ? await leftoversOf.find(ref, previous?.containerId) : [];
    const start = await loadAndPlan(a);
    // The agent of a killed worker's attempt may still run in its container, or have finished
    // there: its outcome is this attempt's (the agent is not started again). An attempt that ends
    // early adopts nothing: its leftovers are all removed here.
    const adopted = await leftoversOf.settle(leftovers, start.kind === 'planned' ? start : null, log);
    if (start.kind !== 'planned') return endEarly(a, start);
    return runPlanned(a, start, adopted);
  }

  function beginAttempt(ctx: Context, ref: ExecuteCaseInput, log: Logger, stopSignal: AbortSignal): Attempt {
    const progress: Attempt['progress'] = { phase: 'starting', containerId: undefined };
    const heartbeat = () =>
      ctx.heartbeat({ containerId: progress.containerId, phase: progress.phase } satisfies HeartbeatDetails);
    return {
      ctx,
      ref,
      attempt: ctx.info.attempt,
      log,
      stopSignal,
      phaseStart: Date.now(),
      progress,
      heartbeat,
      rideOut: (what, fn) => rideOutOutage(fn, { what, log, onWait: heartbeat, signal: stopSignal }),
    };
  }

  /** Step 1: the case and its run request, and what this attempt does with them. */
  async function loadAndPlan(a: Attempt): Promise<AttemptStart> {
    const { ref, log } = a;
    const { workflowId, runCaseId } = ref;
    // The reads on the critical path of every case: one round trip (the run request is cached).
    const [start, run] = await a.rideOut('load case', () =>
      Promise.all([loadCaseStart(pool, ref), deps.runRequests.get(workflowId)]),
    );
    if (start.stored) return { kind: 'stored', stored: start.stored, request: run.request };
    const { status } = start;
    if (status === undefined || isTerminalStatus(status)) {
      log.info({ code: 'CASE_NOT_ACTIVE', status }, 'case is no longer active; not executing');
      return { kind: 'not_active' };
    }
    const caseInput = parseCaseInput(workflowId, runCaseId, start.caseInput);

    // An earlier attempt on this host finished the agent but could not store its record (Postgres
    // down longer than it waited, the worker killed): store that one; the agent never runs twice.
    const spooled = a.attempt > 1 ? await readSpooled(ref, log) : null;
    if (spooled) {
      log.info(
        { code: 'CASE_RESULT_FROM_SPOOL', from_attempt: spooled.raw.attempt, complete: spooled.complete },
        "an earlier attempt's finished record is stored; the agent is not run again",
      );
      return { kind: 'spooled', spooled, request: run.request };
    }

    // prepareRun failed such a run before its first case; a case that gets here anyway fails at once.
    if (!run.spec) return { kind: 'no_spec', specError: run.specError };
    // A batch task's own runtime, and the result cache when the agent allows reuse (task-case.ts).
    const plan = await planTaskCase(deps, run.request, caseInput, run.spec);
    return { kind: 'planned', request: run.request, caseInput, plan, spec: plan.spec };
  }

  /** An attempt that runs no agent ends with what step 1 found (its leftovers are removed by then). */
  async function endEarly(
    a: Attempt,
    start: Exclude<AttemptStart, PlannedCase>,
  ): Promise<CaseExecutionSummary> {
    const { ref, log } = a;
    switch (start.kind) {
      case 'stored':
        if (a.attempt > 1) await discardSpooled(ref, log);
        return finishInline(ref, start.stored, summarize(start.stored.result, start.request.scorers), log);
      case 'not_active':
        // Closed by someone else (the platform's terminate): its event, and the run's if it was the last.
        await a.rideOut('record run end', () =>
          recordRunEnd(pool, {
            workflowId: ref.workflowId,
            experimentId: ref.experimentId,
            runCaseIds: [ref.runCaseId],
            resultEvents: deps.resultEvents,
          }),
        );
        return { status: 'not_active', errorMessage: null, exitCode: null };
      case 'spooled': {
        a.progress.phase = 'persisting';
        const { spooled } = start;
        const record = spooled.complete ? spooled.raw : afterCommandLost(spooled.raw, log);
        const stored = await a.rideOut('store case result', () =>
          saveCaseResult(pool, ref.workflowId, ref.runCaseId, record),
        );
        await discardSpooled(ref, log);
        return finishInline(ref, stored, summarize(stored.result, start.request.scorers), log);
      }
      case 'no_spec':
        throw start.specError;
    }
  }

  /** Steps 2 to 5 for a case this attempt runs, or adopts from a killed worker's attempt. */
  async function runPlanned(
    a: Attempt,
    p: PlannedCase,
    adopted: AdoptableContainer | null,
  ): Promise<CaseExecutionSummary> {
    const { ref, log } = a;
    if (!adopted) throwIfRetryBudgetSpent(a.ctx, ref);
    const cache = p.plan.resultCache ? ('miss' as const) : undefined;
    if (!adopted && p.plan.resultCache && p.plan.cacheMode === 'use') {
      const reused = await reuseFromCache(a, p, p.plan.resultCache);
      if (reused) return reused;
    }

    await markRunning(a);
    if (!adopted) log.info({ code: 'CASE_EXEC_START' }, 'case starts');
    const startedAt = adopted ? new Date(adopted.startedAtMs) : new Date();
    const prepared = await prepareSandbox(a, p, adopted, startedAt);
    if (prepared.kind === 'failed') return prepared.summary;

    // Heartbeats from here to the end: while the case waits for a DOCKER_MAX_LIVE_CONTAINERS slot
    // (a full worker must not fail cases by their heartbeat timeout), while the agent runs, and
    // while its record is being stored. The first goes out after HEARTBEAT_INTERVAL_MS, not at once:
    // a heartbeat is a server write, and for short cases an immediate one cost ~10% of the container
    // phase on 2 cores (bench/sandbox-overhead). Nothing depends on it earlier: a retry also finds
    // the previous attempt's container by its labels, a dead worker is noticed by the heartbeat
    // timeout counted from the activity start, and a cancel requested before it arrives with its
    // response.
    a.progress.phase = 'waiting_for_container_slot';
    const beat = setInterval(a.heartbeat, HEARTBEAT_INTERVAL_MS);
    let persisted: Persisted;
    try {
      const result = await containerPhase(a, { planned: p, adopted, startedAt, sandbox: prepared });
      persisted = await persist(a, p, result, cache);
    } finally {
      // They end with the stored record: the inline finish below runs without them.
      clearInterval(beat);
    }
    return finishInline(ref, persisted.stored, persisted.summary, log);
  }

  /** A stored result the agent allows to reuse (task-case.ts): the case gets it, no container starts. */
  async function reuseFromCache(
    a: Attempt,
    p: PlannedCase,
    resultCache: NonNullable<TaskCasePlan['resultCache']>,
  ): Promise<CaseExecutionSummary | null> {
    const { ref, log } = a;
    const reused = await reuseCachedResult(deps, {
      workflowId: ref.workflowId,
      runCaseId: ref.runCaseId,
      attempt: a.attempt,
      resultCache,
      phaseStart: a.phaseStart,
    });
    if (!reused) return null;
    await markRunning(a);
    log.info(
      { code: 'CASE_RESULT_REUSED', from: reused.result.resultCache?.reusedFrom },
      'stored result reused; no container started',
    );
    const summary = summarize(reused.result, p.request.scorers);
    return { ...(await finishInline(ref, reused, summary, log)), cache: 'hit' };
  }

  async function markRunning(a: Attempt): Promise<void> {
    const { experimentId, runCaseId } = a.ref;
    await a.rideOut('mark running', () =>
      transitionCaseStatus(pool, { experimentId, runCaseId, to: 'running' }),
    );
  }

  /**
   * Step 2, before the container slot: a warm container claimed, the case network (an adopted
   * container's own, a warm container's, or a new one) and the case's rendered commands. A template
   * error fails the case here, with its record stored.
   */
  async function prepareSandbox(
    a: Attempt,
    p: PlannedCase,
    adopted: AdoptableContainer | null,
    startedAt: Date,
  ): Promise<PreparedSandbox | { kind: 'failed'; summary: CaseExecutionSummary }> {
    const { ref, log } = a;
    const { request, caseInput, spec } = p;
    // A warm container (SANDBOX_WARM_POOL_SIZE) comes with the case's own network, if it gets one.
    const template =
      !adopted && deps.warmPool && warmSandboxTemplate(spec, caseNetworkPlan(deps, { caseInput, spec }));
    const warm = template ? deps.warmPool?.claim(template) : undefined;
    const network: CaseNetwork = adopted
      ? adoptCaseNetwork(deps, { request, caseInput, container: adopted, log })
      : await openCaseNetwork(deps, {
          request,
          caseInput,
          spec,
          log,
          network: warm?.network,
        }).catch(async (err: unknown) => {
          await warm?.discard();
          throw err;
        });
    let commands: CaseCommands;
    try {
      commands = renderCaseCommands(ref, request, caseInput, spec, network.mockBaseUrl);
    } catch (err) {
      // A template error is the agent definition's fault: the case fails, nothing is retried.
      await warm?.discard();
      await network.close();
      if (adopted) await removeContainer(adopted.containerId, a.rideOut, log);
      const message = errorText(err);
      const failed = await saveCaseResult(
        pool,
        ref.workflowId,
        ref.runCaseId,
        failedBeforeExec(message, spec, startedAt, a.attempt),
      );
      return { kind: 'failed', summary: summarize(failed.result, request.scorers) };
    }
    return { kind: 'ready', warm, network, commands };
  }

  /**
   * Steps 2 to 4 in a DOCKER_MAX_LIVE_CONTAINERS slot (inContainer), then, out of it, the warm
   * claim given up and the case network closed: its mock requests and whether its telemetry
   * drained go into the record.
   */
  async function containerPhase(a: Attempt, c: SandboxedCase): Promise<CaseRawResult> {
    const { ctx, log, stopSignal } = a;
    const s = c.sandbox;
    let mockRequests: unknown[] = [];
    let telemetryComplete = false;
    const result = await deps.liveContainers
      .run(() => inContainer(a, c))
      .catch((err: unknown) => {
        if (stopSignal.aborted) {
          const failure = stopFailure(ctx);
          log.info(
            {
              code: failure instanceof CancelledFailure ? 'CASE_EXEC_CANCELED' : 'CASE_EXEC_WORKER_SHUTDOWN',
            },
            'case stopped by us; container removed',
          );
          throw failure;
        }
        throw err;
      })
      .finally(async () => {
        // Stopped before its container phase began: the warm container never was the case's.
        await s.warm?.discard();
        await s.network.close().then(
          (closed) => {
            mockRequests = closed.requests;
            telemetryComplete = closed.telemetryComplete;
          },
          (err: unknown) =>
            log.warn(
              { code: 'E_CASE_NETWORK_CLOSE_FAILED', err: errorText(err) },
              'closing the case network failed',
            ),
        );
      });
    result.timings.containerPhaseMs = Date.now() - a.phaseStart;
    if (mockRequests.length > 0) result.mockRequests = mockRequests;
    result.telemetryComplete = telemetryComplete;
    const { resultCache } = c.planned.plan;
    if (resultCache) result.resultCache = resultCache;
    return result;
  }

  /** In the container slot: the container obtained, exec + spool, the logs, the container removed. */
  async function inContainer(a: Attempt, c: SandboxedCase): Promise<CaseRawResult> {
    const connectStart = Date.now();
    a.progress.phase = 'container_start';
    const container = await obtainContainer(a, c);
    const { name, addresses } = container;
    a.progress.containerId = container.containerId;
    const id = container.containerId;
    a.progress.phase = 'case_exec';
    c.sandbox.network.bindContainer(addresses);
    try {
      const recordWithLogs = await execAndSpool(a, c, container, connectStart);
      return recordWithLogs(await collectLogs(a, id));
    } finally {
      // An adopted container by its name: its case files directory (named after it) goes too.
      await removeContainer(c.adopted ? name : id, a.rideOut, a.log);
      a.progress.containerId = undefined;
    }
  }

  /** Step 2: the killed worker's container (adopted), a claimed warm one, or a cold one. */
  async function obtainContainer(a: Attempt, c: SandboxedCase): Promise<StartedContainer> {
    const { planned: p, adopted, sandbox: s } = c;
    if (adopted) return { ...adopted, startup: p.spec.startup };
    // Fixed name per attempt: a create that failed half-way is replaced by the next try.
    const { ref } = a;
    const containerSpec = caseContainerSpec({
      workflowId: ref.workflowId,
      experimentId: ref.experimentId,
      runCaseId: ref.runCaseId,
      attempt: a.attempt,
      request: p.request,
      caseInput: p.caseInput,
      spec: p.spec,
      plan: p.plan,
      network: s.network,
      startCommand: s.commands.start,
    });
    const { warm } = s;
    return a.rideOut('start container', () =>
      warm ? warm.start(containerSpec) : sandbox.createAndStart(containerSpec),
    );
  }

  /**
   * Step 3: the case command — adopted, the outcome of the one the killed worker's attempt started
   * — with its record spooled at once, then the after command, spooled again. Returns the record,
   * to be completed with the container's logs.
   */
  async function execAndSpool(
    a: Attempt,
    c: SandboxedCase,
    container: StartedContainer,
    connectStart: number,
  ): Promise<(containerLogs: string) => CaseRawResult> {
    const { ref, log, stopSignal } = a;
    const { planned: p, adopted } = c;
    const { commands } = c.sandbox;
    const id = container.containerId;
    const timeoutSeconds = p.spec.caseTimeoutSeconds;
    const sandboxConnectMs = adopted ? 0 : Date.now() - connectStart;
    const execStart = adopted?.startedAtMs ?? Date.now();
    const caseRun = adopted
      ? // The case's deadline counts from the command's start, not from this attempt's.
        await sandbox.awaitCaseCommand(adopted, {
          timeoutMs: adopted.startedAtMs + timeoutSeconds * 1000 - Date.now(),
          signal: stopSignal,
        })
      : await sandbox.execUntilAgentReady(container, {
          command: commands.exec,
          timeoutMs: timeoutSeconds * 1000,
          signal: stopSignal,
          onRetry: (n, retryInMs) =>
            log.info(
              { code: 'CASE_EXEC_WAIT_AGENT_READY', attempt: n, retry_in: retryInMs / 1000 },
              'agent not ready',
            ),
        });
    await throwIfStoppedByUs(id, caseRun, stopSignal);
    const caseExecMs = Date.now() - execStart;
    const record = (after: ExecResult | null, containerLogs: string): CaseRawResult =>
      caseRecord({
        ref,
        attempt: a.attempt,
        spec: p.spec,
        containerName: container.name,
        caseRun,
        after,
        containerLogs,
        startedAt: c.startedAt,
        times: { connectStart, execStart, sandboxConnectMs, caseExecMs },
      });
    // The agent's output is durable before anything else can fail: the after command, the
    // log read, the removal, the store, or this worker being killed (a retry on this host
    // stores this record and never runs the agent again).
    const afterPending = !caseRun.timedOut && commands.after !== '';
    a.progress.phase = afterPending ? 'after_exec' : 'exited';
    await spoolRecord(ref, { raw: record(null, ''), complete: !afterPending }, log);
    if (deps.pauseAfterCaseExecMs) {
      log.warn({ code: 'FAULT_PAUSE_AFTER_CASE_EXEC' }, 'test fault: pausing after the case command');
      await delay(deps.pauseAfterCaseExecMs);
    }
    if (!afterPending) return (containerLogs) => record(null, containerLogs);
    const after = await sandbox.exec(id, {
      command: commands.after,
      timeoutMs: timeoutSeconds * 1000,
      signal: stopSignal,
    });
    await throwIfStoppedByUs(id, after, stopSignal);
    a.progress.phase = 'exited';
    await spoolRecord(ref, { raw: record(after, ''), complete: true }, log);
    return (containerLogs) => record(after, containerLogs);
  }

  /** Step 4: the container's log tail. */
  async function collectLogs(a: Attempt, containerId: string): Promise<string> {
    a.progress.phase = 'collect';
    // A failed log read leaves the logs without the container's tail; it does not fail the case.
    const containerLogs = await sandbox.logs(containerId, CONTAINER_LOG_TAIL_CHARS).catch((err: unknown) => {
      a.log.warn(
        { code: 'E_DOCKER_LOGS', err: errorText(err) },
        'container logs unreadable; stored without them',
      );
      return '';
    });
    a.progress.phase = 'exited';
    return containerLogs;
  }

  /**
   * Step 5: the record stored and its spooled copy discarded; what the inline finish (finishInline)
   * then takes.
   */
  async function persist(
    a: Attempt,
    p: PlannedCase,
    result: CaseRawResult,
    cache: 'miss' | undefined,
  ): Promise<Persisted> {
    const { ref, log } = a;
    const summary = { ...summarize(result, p.request.scorers), cache };
    // Postgres may be down right now: the store waits it out (heartbeating); if it waits longer
    // than INFRA_OUTAGE_BUDGET_MS (src/domain/retry-budget.ts) the attempt fails and the next one stores the spooled record.
    a.progress.phase = 'persisting';
    const stored = await a.rideOut('store case result', () =>
      storeCaseResult(deps, ref, result, summary, log),
    );
    await discardSpooled(ref, log);
    // A stored record from an earlier attempt wins over this one (first write wins).
    return {
      stored,
      summary: stored.result === result ? summary : summarize(stored.result, p.request.scorers),
    };
  }

  /**
   * A case or after command that died of a signal we (or another worker, or the reaper) sent —
   * the cancel, the worker's shutdown, a container removal — did not fail by itself: that exit code
   * is no result of the agent's (no E_AGENT_EXIT_NON_ZERO: exit code 143). A cancel ends the case
   * canceled, a shutdown or a removal from outside is retried.
   */
  async function throwIfStoppedByUs(id: string, r: ExecResult, stopSignal: AbortSignal): Promise<void> {
    if (r.timedOut || r.exitCode <= 128) return;
    if (stopSignal.aborted) throw stopFailure(Context.current());
    if (await sandbox.stoppedFromOutside(id))
      throw ApplicationFailure.retryable(
        `E_SANDBOX_CONTAINER_STOPPED: the case's container was stopped from outside the agent (exit code ${r.exitCode}); the case is retried`,
        'E_SANDBOX_CONTAINER_STOPPED',
      );
  }

  /** Best effort: a disk that cannot take the record leaves it in memory only (logged). */
  async function spoolRecord(ref: CaseRef, record: SpooledRecord, log: Logger): Promise<void> {
    await deps.spool
      .write(ref.workflowId, ref.runCaseId, record)
      .catch((err: unknown) =>
        log.warn(
          { code: 'E_CASE_SPOOL_FAILED', err: errorText(err) },
          'the finished record could not be spooled',
        ),
      );
  }

  async function readSpooled(ref: CaseRef, log: Logger): Promise<SpooledRecord | null> {
    return deps.spool.read(ref.workflowId, ref.runCaseId).catch((err: unknown) => {
      log.warn({ code: 'E_CASE_SPOOL_FAILED', err: errorText(err) }, 'the spool could not be read');
      return null;
    });
  }

  async function discardSpooled(ref: CaseRef, log: Logger): Promise<void> {
    await deps.spool
      .discard(ref.workflowId, ref.runCaseId)
      .catch((err: unknown) =>
        log.warn(
          { code: 'E_CASE_SPOOL_FAILED', err: errorText(err) },
          'a spooled record could not be removed',
        ),
      );
  }

  /**
   * Removal waits out a Docker outage but never fails the case: a container left behind carries its
   * labels, so the next attempt, the case's finalize or the orphan reaper removes it.
   */
  async function removeContainer(id: string, rideOut: RideOut, log: Logger): Promise<void> {
    await rideOut('remove container', () => sandbox.remove(id)).catch((err: unknown) =>
      log.warn(
        { code: 'E_SANDBOX_REMOVE_FAILED', container_id: id, err: errorText(err) },
        'case container not removed; it is removed later by its labels',
      ),
    );
  }

  return { executeCase: caseActivity(executeCase) };
}

/**
 * Whether a cancellation of the activity stops the attempt. Temporal giving up on it — its heartbeat
 * lapsed while Temporal was away (timed out, not found) — does not: the agent keeps running, its
 * record is spooled and stored, and the next attempt joins it (LiveAttempt) instead of starting the
 * agent again.
 */
function stopsTheAttempt(ctx: Context): boolean {
  const d = ctx.cancellationDetails;
  return !(d?.timedOut === true || d?.notFound === true);
}

function attemptStop(
  ctx: Context,
  log: Logger,
  onOrphaned: (stop: AbortController) => void,
): AbortController {
  const stop = new AbortController();
  const onAbort = () => {
    if (stopsTheAttempt(ctx)) {
      stop.abort(ctx.cancellationSignal.reason);
      return;
    }
    log.warn(
      { code: 'CASE_ATTEMPT_ORPHANED', reason: String(ctx.cancellationSignal.reason) },
      'Temporal gave up on this attempt (heartbeat lapsed); the case goes on and its retry in this worker waits for it',
    );
    onOrphaned(stop);
  };
  if (ctx.cancellationSignal.aborted) onAbort();
  else ctx.cancellationSignal.addEventListener('abort', onAbort, { once: true });
  return stop;
}

/**
 * How an attempt we stopped ends: a cancel (benchctl cancel, the run's termination) as canceled —
 * the workflow marks the case canceled (CONTRACT §3.2); the worker's shutdown as a retryable
 * failure, retried by another worker and never recorded as the agent's.
 */
function stopFailure(ctx: Context): Error {
  if (ctx.cancellationDetails?.workerShutdown === true)
    return ApplicationFailure.retryable(
      'E_WORKER_SHUTDOWN: the worker shut down while the case ran; the case is retried',
      'E_WORKER_SHUTDOWN',
    );
  return new CancelledFailure('case canceled');
}

/**
 * Retries are bounded by time, not by count (runs that carry a budget): a Temporal outage that
 * lapses heartbeats, or a worker killed a few times, costs attempts but never the case, until the
 * budget from the first attempt's scheduling is spent. Checked only once nothing is left to store:
 * a finished record is always stored, however late.
 */
function throwIfRetryBudgetSpent(ctx: Context, ref: ExecuteCaseInput): void {
  const attempt = ctx.info.attempt;
  if (attempt <= 1 || ref.retryBudgetSeconds === undefined) return;
  const elapsedSeconds = Math.round((Date.now() - ctx.info.scheduledTimestampMs) / 1000);
  if (elapsedSeconds > ref.retryBudgetSeconds)
    throw ApplicationFailure.nonRetryable(
      `E_CASE_RETRY_BUDGET_SPENT: attempt ${attempt} started ${elapsedSeconds}s after the first was scheduled (budget ${ref.retryBudgetSeconds}s)`,
      'E_CASE_RETRY_BUDGET_SPENT',
    );
}

function summarize(r: CaseRawResult, scorers: ExperimentRunRequested['scorers']): CaseExecutionSummary {
  return {
    status: r.status,
    errorMessage: r.errorMessage,
    exitCode: r.exitCode,
    needsJudge: anyScorerCallsJudge(scorers, r.status),
  };
}
