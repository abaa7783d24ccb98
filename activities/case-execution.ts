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
import { LABELS } from '../src/docker/labels';
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
  workerBoundReason,
  type CaseNetwork,
  type CaseNetworkDeps,
} from './case-network';
import { rideOutOutage } from './infra-outage';
import { createCaseFinalizer, type CaseFinalizationDeps } from './case-finalization';
import { computeTrajectory } from './case-trajectory';
import { planTaskCase, reuseCachedResult, type TaskCaseDeps } from './task-case';

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

  async function runAttempt(
    ctx: Context,
    ref: ExecuteCaseInput,
    log: Logger,
    stopSignal: AbortSignal,
  ): Promise<CaseExecutionSummary> {
    const { workflowId, experimentId, runCaseId } = ref;
    const attempt = ctx.info.attempt;
    const phaseStart = Date.now();
    // A previous attempt may have died with its container alive (worker killed): it is adopted
    // below, or removed. (A first attempt has no predecessor; a leftover of its fixed name is
    // replaced by createAndStart.)
    const leftovers = attempt > 1 ? await predecessorContainers(ctx, ref) : [];
    const removeLeftovers = async () => {
      for (const c of leftovers) await removePredecessor(c);
    };

    let phase = 'starting';
    let containerId: string | undefined;
    const heartbeat = () => ctx.heartbeat({ containerId, phase } satisfies HeartbeatDetails);
    const rideOut = <T>(what: string, fn: () => Promise<T>) =>
      rideOutOutage(fn, { what, log, onWait: heartbeat, signal: stopSignal });

    // The reads on the critical path of every case: one round trip (the run request is cached).
    const [start, run] = await rideOut('load case', () =>
      Promise.all([loadCaseStart(pool, ref), deps.runRequests.get(workflowId)]),
    );
    if (start.stored) {
      await removeLeftovers();
      if (attempt > 1) await discardSpooled(ref, log);
      return finishInline(ref, start.stored, summarize(start.stored.result, run.request.scorers), log);
    }
    const { status } = start;
    if (status === undefined || isTerminalStatus(status)) {
      log.info({ code: 'CASE_NOT_ACTIVE', status }, 'case is no longer active; not executing');
      await removeLeftovers();
      // Closed by someone else (the platform's terminate): its event, and the run's if it was the last.
      await rideOut('record run end', () =>
        recordRunEnd(pool, {
          workflowId,
          experimentId,
          runCaseIds: [runCaseId],
          resultEvents: deps.resultEvents,
        }),
      );
      return { status: 'not_active', errorMessage: null, exitCode: null };
    }
    const caseInput = parseCaseInput(workflowId, runCaseId, start.caseInput);

    // An earlier attempt on this host finished the agent but could not store its record (Postgres
    // down longer than it waited, the worker killed): store that one; the agent never runs twice.
    const spooled = attempt > 1 ? await readSpooled(ref, log) : null;
    if (spooled) {
      log.info(
        { code: 'CASE_RESULT_FROM_SPOOL', from_attempt: spooled.raw.attempt, complete: spooled.complete },
        "an earlier attempt's finished record is stored; the agent is not run again",
      );
      await removeLeftovers();
      phase = 'persisting';
      const record = spooled.complete ? spooled.raw : afterCommandLost(spooled.raw, log);
      const stored = await rideOut('store case result', () =>
        saveCaseResult(pool, workflowId, runCaseId, record),
      );
      await discardSpooled(ref, log);
      return finishInline(ref, stored, summarize(stored.result, run.request.scorers), log);
    }

    // prepareRun failed such a run before its first case; a case that gets here anyway fails at once.
    if (!run.spec) {
      await removeLeftovers();
      throw run.specError;
    }
    // A batch task's own runtime, and the result cache when the agent allows reuse (task-case.ts).
    const plan = await planTaskCase(deps, run.request, caseInput, run.spec);
    const spec = plan.spec;
    // The agent of a killed worker's attempt may still run in its container, or have finished
    // there: its outcome is this attempt's (the agent is not started again).
    const adopted = await adoptOrRemove(leftovers, spec, caseInput, log);

    if (!adopted) throwIfRetryBudgetSpent(ctx, ref);
    const cache = plan.resultCache ? ('miss' as const) : undefined;
    if (!adopted && plan.resultCache && plan.cacheMode === 'use') {
      const reused = await reuseCachedResult(deps, {
        workflowId,
        runCaseId,
        attempt,
        resultCache: plan.resultCache,
        phaseStart,
      });
      if (reused) {
        await rideOut('mark running', () =>
          transitionCaseStatus(pool, { experimentId, runCaseId, to: 'running' }),
        );
        log.info(
          { code: 'CASE_RESULT_REUSED', from: reused.result.resultCache?.reusedFrom },
          'stored result reused; no container started',
        );
        const summary = summarize(reused.result, run.request.scorers);
        return { ...(await finishInline(ref, reused, summary, log)), cache: 'hit' };
      }
    }

    await rideOut('mark running', () =>
      transitionCaseStatus(pool, { experimentId, runCaseId, to: 'running' }),
    );
    if (!adopted) log.info({ code: 'CASE_EXEC_START' }, 'case starts');
    const startedAt = adopted ? new Date(adopted.startedAtMs) : new Date();

    // A warm container (SANDBOX_WARM_POOL_SIZE) comes with the case's own network, if it gets one.
    const template =
      !adopted && deps.warmPool && warmSandboxTemplate(spec, caseNetworkPlan(deps, { caseInput, spec }));
    const warm = template ? deps.warmPool?.claim(template) : undefined;
    const network: CaseNetwork = adopted
      ? adoptCaseNetwork(deps, { request: run.request, caseInput, container: adopted, log })
      : await openCaseNetwork(deps, {
          request: run.request,
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
      commands = renderCaseCommands(ref, run.request, caseInput, spec, network.mockBaseUrl);
    } catch (err) {
      // A template error is the agent definition's fault: the case fails, nothing is retried.
      await warm?.discard();
      await network.close();
      if (adopted) await removeContainer(adopted.containerId, rideOut, log);
      const message = errorText(err);
      const failed = await saveCaseResult(
        pool,
        workflowId,
        runCaseId,
        failedBeforeExec(message, spec, startedAt, attempt),
      );
      return summarize(failed.result, run.request.scorers);
    }

    const timeoutSeconds = spec.caseTimeoutSeconds;
    let mockRequests: unknown[] = [];
    let telemetryComplete = false;
    // Heartbeats from here to the end: while the case waits for a DOCKER_MAX_LIVE_CONTAINERS slot
    // (a full worker must not fail cases by their heartbeat timeout), while the agent runs, and
    // while its record is being stored. The first goes out after HEARTBEAT_INTERVAL_MS, not at once:
    // a heartbeat is a server write, and for short cases an immediate one cost ~10% of the container
    // phase on 2 cores (bench/sandbox-overhead). Nothing depends on it earlier: a retry also finds
    // the previous attempt's container by its labels, a dead worker is noticed by the heartbeat
    // timeout counted from the activity start, and a cancel requested before it arrives with its
    // response.
    phase = 'waiting_for_container_slot';
    const beat = setInterval(heartbeat, HEARTBEAT_INTERVAL_MS);
    try {
      const result = await deps.liveContainers
        .run(async () => {
          const connectStart = Date.now();
          phase = 'container_start';
          // Fixed name per attempt: a create that failed half-way is replaced by the next try.
          const startContainer = () => {
            const containerSpec = caseContainerSpec({
              workflowId,
              experimentId,
              runCaseId,
              attempt,
              request: run.request,
              caseInput,
              spec,
              plan,
              network,
              startCommand: commands.start,
            });
            return rideOut('start container', () =>
              warm ? warm.start(containerSpec) : sandbox.createAndStart(containerSpec),
            );
          };
          const container: StartedContainer = adopted
            ? { ...adopted, startup: spec.startup }
            : await startContainer();
          const { name, addresses } = container;
          containerId = container.containerId;
          const id = container.containerId;
          phase = 'case_exec';
          network.bindContainer(addresses);
          try {
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
                attempt,
                spec,
                containerName: name,
                caseRun,
                after,
                containerLogs,
                startedAt,
                times: { connectStart, execStart, sandboxConnectMs, caseExecMs },
              });
            // The agent's output is durable before anything else can fail: the after command, the
            // log read, the removal, the store, or this worker being killed (a retry on this host
            // stores this record and never runs the agent again).
            const afterPending = !caseRun.timedOut && commands.after !== '';
            phase = afterPending ? 'after_exec' : 'exited';
            await spoolRecord(ref, { raw: record(null, ''), complete: !afterPending }, log);
            if (deps.pauseAfterCaseExecMs) {
              log.warn({ code: 'FAULT_PAUSE_AFTER_CASE_EXEC' }, 'test fault: pausing after the case command');
              await delay(deps.pauseAfterCaseExecMs);
            }
            let after: ExecResult | null = null;
            if (afterPending) {
              after = await sandbox.exec(id, {
                command: commands.after,
                timeoutMs: timeoutSeconds * 1000,
                signal: stopSignal,
              });
              await throwIfStoppedByUs(id, after, stopSignal);
              phase = 'exited';
              await spoolRecord(ref, { raw: record(after, ''), complete: true }, log);
            }
            phase = 'collect';
            // A failed log read leaves the logs without the container's tail; it does not fail the case.
            const containerLogs = await sandbox.logs(id, CONTAINER_LOG_TAIL_CHARS).catch((err: unknown) => {
              log.warn(
                { code: 'E_DOCKER_LOGS', err: errorText(err) },
                'container logs unreadable; stored without them',
              );
              return '';
            });
            phase = 'exited';
            return record(after, containerLogs);
          } finally {
            // An adopted container by its name: its case files directory (named after it) goes too.
            await removeContainer(adopted ? name : id, rideOut, log);
            containerId = undefined;
          }
        })
        .catch((err: unknown) => {
          if (stopSignal.aborted) {
            const failure = stopFailure(ctx);
            log.info(
              {
                code:
                  failure instanceof CancelledFailure ? 'CASE_EXEC_CANCELED' : 'CASE_EXEC_WORKER_SHUTDOWN',
              },
              'case stopped by us; container removed',
            );
            throw failure;
          }
          throw err;
        })
        .finally(async () => {
          // Stopped before its container phase began: the warm container never was the case's.
          await warm?.discard();
          await network.close().then(
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
      result.timings.containerPhaseMs = Date.now() - phaseStart;
      if (mockRequests.length > 0) result.mockRequests = mockRequests;
      result.telemetryComplete = telemetryComplete;
      if (plan.resultCache) result.resultCache = plan.resultCache;
      const summary = { ...summarize(result, run.request.scorers), cache };
      // Postgres may be down right now: the store waits it out (heartbeating); if it waits longer
      // than INFRA_OUTAGE_BUDGET_MS (src/domain/retry-budget.ts) the attempt fails and the next one stores the spooled record.
      phase = 'persisting';
      const stored = await rideOut('store case result', () =>
        storeCaseResult(deps, ref, result, summary, log),
      );
      await discardSpooled(ref, log);
      // A stored record from an earlier attempt wins over this one (first write wins).
      return finishInline(
        ref,
        stored,
        stored.result === result ? summary : summarize(stored.result, run.request.scorers),
        log,
      );
    } finally {
      clearInterval(beat);
    }
  }

  /**
   * What earlier attempts of the case left on this Docker host — the container the last one
   * heartbeated and those labelled with the case — newest attempt first.
   */
  async function predecessorContainers(ctx: Context, ref: CaseRef): Promise<Leftover[]> {
    const previous = ctx.info.heartbeatDetails as HeartbeatDetails | undefined;
    const listed = await sandbox.listManagedContainers({
      workflowId: ref.workflowId,
      runCaseId: ref.runCaseId,
    });
    const found: Leftover[] = listed.map((c) => ({
      id: c.id,
      networks: c.networks,
      attempt: attemptOf(c.labels),
    }));
    if (previous?.containerId && !found.some((c) => c.id === previous.containerId))
      found.unshift({ id: previous.containerId, networks: [], attempt: undefined });
    return found.sort((a, b) => (b.attempt ?? 0) - (a.attempt ?? 0));
  }

  /** The container and, best effort, its case network (its worker died before removing them). */
  async function removePredecessor(c: Leftover, log?: Logger): Promise<void> {
    await sandbox.remove(c.id);
    for (const name of c.networks)
      await deps.networks
        .removeLeftover(name)
        .catch((err: unknown) =>
          log?.warn(
            { code: 'E_SANDBOX_NETWORK_REMOVE', network: name, err: errorText(err) },
            'could not remove the case network; the reaper will',
          ),
        );
  }

  /**
   * The newest earlier attempt's container that still runs with the case command recorded in it
   * (running or finished) is adopted, unless the case relies on what died with that attempt's
   * worker (workerBoundReason); every other leftover is removed.
   */
  async function adoptOrRemove(
    leftovers: Leftover[],
    spec: ResolvedCaseSpec,
    caseInput: RunCaseInput,
    log: Logger,
  ): Promise<AdoptableContainer | null> {
    const bound = workerBoundReason(spec, caseInput);
    let adopted: AdoptableContainer | null = null;
    for (const c of leftovers) {
      if (adopted === null) {
        let found: PredecessorContainer =
          bound === null
            ? await sandbox.inspectPredecessor(c.id)
            : { kind: 'unadoptable', reason: bound, name: c.id, networks: c.networks };
        // A warm container (LABELS.pool, no case labels) got the case's env with each exec from
        // its worker's memory, and its pool's reaper judges it by that dead worker: not adopted.
        if (found.kind === 'adoptable' && found.container.labels[LABELS.pool] !== undefined)
          found = {
            kind: 'unadoptable',
            reason: "a warm pool container: the case's env lived in the worker that died",
            name: found.container.name,
            networks: found.container.networks,
          };
        if (found.kind === 'adoptable') {
          adopted = found.container;
          log.info(
            {
              code: 'CASE_CONTAINER_ADOPTED',
              from_attempt: attemptOf(adopted.labels),
              container: adopted.name,
              finished: adopted.exitCode !== null,
            },
            "a killed worker's attempt left its agent running (or finished) in its container; adopted, the agent is not started again",
          );
          continue;
        }
        if (found.kind === 'unadoptable') {
          log.info(
            {
              code: 'CASE_ADOPTION_SKIPPED',
              reason: found.reason,
              from_attempt: c.attempt,
              container: found.name,
            },
            "an earlier attempt's container is not adopted; removed, the case starts afresh",
          );
          c.networks = [...new Set([...c.networks, ...found.networks])];
        }
      }
      await removePredecessor(c, log);
    }
    return adopted;
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
  async function removeContainer(
    id: string,
    rideOut: <T>(what: string, fn: () => Promise<T>) => Promise<T>,
    log: Logger,
  ): Promise<void> {
    await rideOut('remove container', () => sandbox.remove(id)).catch((err: unknown) =>
      log.warn(
        { code: 'E_SANDBOX_REMOVE_FAILED', container_id: id, err: errorText(err) },
        'case container not removed; it is removed later by its labels',
      ),
    );
  }

  return { executeCase: caseActivity(executeCase) };
}

/** A container an earlier attempt of the case left behind. */
interface Leftover {
  id: string;
  networks: string[];
  /** Its attempt label (undefined: not known). */
  attempt: number | undefined;
}

function attemptOf(labels: Record<string, string>): number | undefined {
  const n = Number(labels[LABELS.attempt]);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
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
