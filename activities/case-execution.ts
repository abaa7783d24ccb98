import { Context } from '@temporalio/activity';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { setTimeout as delay } from 'node:timers/promises';
import { isTerminalStatus } from '../src/domain/case-status';
import type { CaseExecutionSummary, CaseRef, ExecuteCaseInput } from '../src/domain/activity-contract';
import { errorText } from '../src/domain/errors';
import { parseAgentStdout } from '../src/domain/agent-output';
import { anyScorerCallsJudge } from '../src/domain/judge-score';
import { assembleCaseLogs, caseOutcome, CONTAINER_LOG_TAIL_CHARS } from '../src/domain/case-logs';
import { buildCommandContext, renderCommandTemplate } from '../src/domain/template';
import type { RunCaseInput, ExperimentRunRequested } from '../src/domain/message';
import type { ResolvedCaseSpec } from '../src/domain/runtime-spec';
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
  AgentReadyParams,
  CaseContainerSpec,
  ExecParams,
  ExecResult,
  StartedContainer,
} from '../src/docker/docker-sandbox';
import { caseContainerName, LABELS } from '../src/docker/labels';
import { mergeCaseOtelEnv } from '../src/otel/case-otel-env';
import { parseCaseInput } from '../src/db/run-request-cache';
import type { Logger } from '../src/logger';
import { caseActivity } from './activity-boundary';
import type { CaseResultSpool, SpooledRecord } from './case-result-spool';
import { openCaseNetwork, type CaseNetworkDeps } from './case-network';
import { rideOutOutage } from './infra-outage';
import { createCaseFinalizer, type CaseFinalizationDeps } from './case-finalization';
import { computeTrajectory } from './case-trajectory';
import { planTaskCase, reuseCachedResult, type TaskCaseDeps } from './task-case';

/** Where every case container finds its own case as JSON (ARCHITECTURE §5 item 9). */
export const CASE_FILE_PATH = '/benchmark/case.json';
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
  listManagedContainers(filter: { workflowId: string; runCaseId: number }): Promise<Array<{ id: string }>>;
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
}

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
  const live = new Map<string, LiveAttempt>();

  async function executeCase(ref: ExecuteCaseInput): Promise<CaseExecutionSummary> {
    const ctx = Context.current();
    const attempt = ctx.info.attempt;
    const log = deps.log.child({
      workflow_id: ref.workflowId,
      experiment_id: ref.experimentId,
      run_case_id: ref.runCaseId,
      attempt,
    });
    const key = `${ref.workflowId}\n${ref.runCaseId}`;
    const predecessor = live.get(key);
    if (predecessor) {
      const joined = await joinPredecessor(ctx, predecessor, log);
      if (joined) return joined;
    }
    const stop = attemptStop(ctx, log);
    const entry: LiveAttempt = { attempt, stop, outcome: runAttempt(ctx, ref, log, stop.signal) };
    live.set(key, entry);
    try {
      return await entry.outcome;
    } finally {
      if (live.get(key) === entry) live.delete(key);
    }
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
    // A previous attempt may have died with its container alive (worker killed): remove it first.
    // (A first attempt has no predecessor; a leftover of its fixed name is replaced by createAndStart.)
    if (attempt > 1) {
      const previous = ctx.info.heartbeatDetails as HeartbeatDetails | undefined;
      if (previous?.containerId) await sandbox.remove(previous.containerId);
      for (const c of await sandbox.listManagedContainers({ workflowId, runCaseId }))
        await sandbox.remove(c.id);
    }

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
      if (attempt > 1) await discardSpooled(ref, log);
      return finishInline(ref, start.stored, summarize(start.stored.result, run.request.scorers), log);
    }
    const { status } = start;
    if (status === undefined || isTerminalStatus(status)) {
      log.info({ code: 'CASE_NOT_ACTIVE', status }, 'case is no longer active; not executing');
      // Closed by someone else (the platform's terminate): its event, and the run's if it was the last.
      await recordRunEnd(pool, {
        workflowId,
        experimentId,
        runCaseIds: [runCaseId],
        resultEvents: deps.resultEvents,
      });
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
      phase = 'persisting';
      const record = spooled.complete ? spooled.raw : afterCommandLost(spooled.raw, log);
      const stored = await rideOut('store case result', () =>
        saveCaseResult(pool, workflowId, runCaseId, record),
      );
      await discardSpooled(ref, log);
      return finishInline(ref, stored, summarize(stored.result, run.request.scorers), log);
    }

    // Retries are bounded by time, not by count (runs that carry a budget): a Temporal outage that
    // lapses heartbeats, or a worker killed a few times, costs attempts but never the case, until the
    // budget from the first attempt's scheduling is spent. Checked only here, once nothing is left to
    // store: a finished record is always stored, however late.
    if (attempt > 1 && ref.retryBudgetSeconds !== undefined) {
      const elapsedSeconds = Math.round((Date.now() - ctx.info.scheduledTimestampMs) / 1000);
      if (elapsedSeconds > ref.retryBudgetSeconds)
        throw ApplicationFailure.nonRetryable(
          `E_CASE_RETRY_BUDGET_SPENT: attempt ${attempt} started ${elapsedSeconds}s after the first was scheduled (budget ${ref.retryBudgetSeconds}s)`,
          'E_CASE_RETRY_BUDGET_SPENT',
        );
    }

    // prepareRun failed such a run before its first case; a case that gets here anyway fails at once.
    if (!run.spec) throw run.specError;
    // A batch task's own runtime, and the result cache when the agent allows reuse (task-case.ts).
    const plan = await planTaskCase(deps, run.request, caseInput, run.spec);
    const spec = plan.spec;
    const cache = plan.resultCache ? ('miss' as const) : undefined;
    if (plan.resultCache && plan.cacheMode === 'use') {
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
    log.info({ code: 'CASE_EXEC_START' }, 'case starts');
    const startedAt = new Date();

    const network = await openCaseNetwork(deps, { request: run.request, caseInput, spec, log });
    let commands: { start: string | undefined; exec: string; after: string };
    try {
      const context = buildCommandContext({
        experimentId,
        datasetId: run.request.dataset.id,
        datasetName: run.request.dataset.name,
        agentId: run.request.agent.id,
        agentName: run.request.agent.name,
        agentKey: run.request.agent.agent_key,
        agentVersion: run.request.agent.version,
        runCase: {
          runCaseId,
          dataItemId: caseInput.data_item_id,
          attemptNo: caseInput.attempt_no,
          userInput: caseInput.user_input,
          sessionJsonl: caseInput.session_jsonl,
          traceId: caseInput.trace_id,
        },
        mockBaseUrl: network.mockBaseUrl,
      });
      commands = {
        // §6.2: sandbox_start_command, else the legacy agent_command (not rendered), else image CMD.
        start:
          renderCommandTemplate(spec.sandboxStartCommand, context) || spec.agentCommand?.trim() || undefined,
        exec: renderCommandTemplate(spec.caseExecCommand, context),
        after: renderCommandTemplate(spec.afterExecCommand, context),
      };
    } catch (err) {
      // A template error is the agent definition's fault: the case fails, nothing is retried.
      await network.close();
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
          const container = await rideOut('start container', () =>
            sandbox.createAndStart({
              name: caseContainerName(workflowId, runCaseId, attempt),
              image: spec.agentImage,
              startCommand: commands.start,
              // The agent's own OTEL_* settings are merged with ours, not overwritten (case-otel-env.ts).
              env: mergeCaseOtelEnv({ ...caseEnv(run.request, caseInput, spec), ...plan.env }, network.env),
              labels: {
                [LABELS.managed]: 'true',
                [LABELS.experimentId]: String(experimentId),
                [LABELS.runCaseId]: String(runCaseId),
                [LABELS.workflowId]: workflowId,
                [LABELS.attempt]: String(attempt),
                [LABELS.createdAt]: new Date().toISOString(),
              },
              network: network.network ?? spec.dockerNetwork,
              hostAddress: network.hostAddress,
              // A worker that did not prepare the run ensures the image itself, as the run asks.
              pull: { policy: spec.pullPolicy, timeoutSeconds: spec.pullTimeoutSeconds },
              files: [
                {
                  path: CASE_FILE_PATH,
                  content: JSON.stringify(
                    { ...caseFile(run.request, caseInput), ...(plan.task ? { task: plan.task } : {}) },
                    null,
                    2,
                  ),
                  mode: 0o644,
                },
                ...network.files,
              ],
              limits: spec.limits,
              hardening: spec.hardening,
              user: spec.user,
              startup: spec.startup,
            }),
          );
          const { name, addresses } = container;
          containerId = container.containerId;
          const id = container.containerId;
          phase = 'case_exec';
          network.bindContainer(addresses);
          try {
            const sandboxConnectMs = Date.now() - connectStart;
            const execStart = Date.now();
            const caseRun = await sandbox.execUntilAgentReady(container, {
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
            const record = (after: ExecResult | null, containerLogs: string): CaseRawResult => {
              const parsed = parseAgentStdout(caseRun.stdout, caseRun.stderr);
              const logs = assembleCaseLogs({
                execStdout: caseRun.stdout,
                execStderr: caseRun.stderr,
                afterLogs: after ? `${after.stdout}\n${after.stderr}`.trim() : null,
                logsOverride: parsed.logsOverride,
                containerLogs,
                footer: `[agentbench] workflow_id=${workflowId} run_case_id=${runCaseId} attempt=${attempt}`,
              });
              const timedOut = caseRun.timedOut || (after?.timedOut ?? false);
              const outcome = timedOut
                ? {
                    status: 'timeout' as const,
                    exitCode: null,
                    errorMessage: `E_CASE_TIMEOUT: ${after?.timedOut ? 'after_exec_command' : 'case_exec_command'} exceeded ${timeoutSeconds}s and was killed`,
                  }
                : caseOutcome({
                    caseExitCode: caseRun.exitCode,
                    afterExitCode: after ? after.exitCode : null,
                  });
              return {
                ...outcome,
                agentOutput: timedOut ? null : parsed.output,
                logs,
                stdoutTrajectory: parsed.stdoutTrajectory,
                agentUsage: parsed.usage,
                timings: {
                  sandboxConnectMs,
                  caseExecMs: after ? Date.now() - execStart : caseExecMs,
                  totalMs: Date.now() - connectStart,
                },
                startedAt: startedAt.toISOString(),
                finishedAt: new Date().toISOString(),
                image: spec.agentImage,
                containerName: name,
                attempt,
              };
            };
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
            await removeContainer(id, rideOut, log);
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
        .finally(() =>
          network.close().then(
            (closed) => {
              mockRequests = closed.requests;
              telemetryComplete = closed.telemetryComplete;
            },
            (err: unknown) =>
              log.warn(
                { code: 'E_CASE_NETWORK_CLOSE_FAILED', err: errorText(err) },
                'closing the case network failed',
              ),
          ),
        );
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

function attemptStop(ctx: Context, log: Logger): AbortController {
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
 * A spooled record of an attempt cut after its case command, before its after command: the case
 * command's outcome stands (the agent is not run again), but a successful one cannot pass as a
 * success whose after command never ran.
 */
function afterCommandLost(raw: CaseRawResult, log: Logger): CaseRawResult {
  if (raw.status !== 'success') return raw;
  log.warn({ code: 'E_AFTER_EXEC_NOT_RUN' }, "the after command of the spooled record's attempt never ran");
  const errorMessage =
    'E_AFTER_EXEC_NOT_RUN: the attempt was cut after case_exec_command and before after_exec_command';
  return {
    ...raw,
    status: 'failed',
    exitCode: null,
    errorMessage,
    logs: `${raw.logs}\n[agentbench] ${errorMessage}`,
  };
}

function summarize(r: CaseRawResult, scorers: ExperimentRunRequested['scorers']): CaseExecutionSummary {
  return {
    status: r.status,
    errorMessage: r.errorMessage,
    exitCode: r.exitCode,
    needsJudge: anyScorerCallsJudge(scorers, r.status),
  };
}

function failedBeforeExec(
  message: string,
  spec: ResolvedCaseSpec,
  startedAt: Date,
  attempt: number,
): CaseRawResult {
  return {
    status: 'failed',
    errorMessage: message,
    exitCode: null,
    agentOutput: null,
    logs: message,
    stdoutTrajectory: null,
    agentUsage: null,
    timings: { sandboxConnectMs: 0, caseExecMs: 0, totalMs: Date.now() - startedAt.getTime() },
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    image: spec.agentImage,
    containerName: null,
    attempt,
  };
}

/** The case as structured data, so an agent never has to parse shell-spliced text (§13.10). */
function caseFile(req: ExperimentRunRequested, c: RunCaseInput) {
  return {
    experiment_id: req.experiment.id,
    dataset: { id: req.dataset.id, name: req.dataset.name },
    agent: {
      id: req.agent.id,
      name: req.agent.name,
      agent_key: req.agent.agent_key,
      version: req.agent.version,
    },
    run_case_id: c.run_case_id,
    data_item_id: c.data_item_id,
    attempt_no: c.attempt_no,
    user_input: c.user_input,
    session_jsonl: c.session_jsonl,
    reference_output: c.reference_output,
    trace_id: c.trace_id,
  };
}

function caseEnv(
  req: ExperimentRunRequested,
  c: RunCaseInput,
  spec: ResolvedCaseSpec,
): Record<string, string> {
  return {
    ...spec.env,
    BENCHMARK_EXPERIMENT_ID: String(req.experiment.id),
    BENCHMARK_DATASET_ID: String(req.dataset.id),
    BENCHMARK_AGENT_KEY: req.agent.agent_key,
    BENCHMARK_RUN_CASE_ID: String(c.run_case_id),
    BENCHMARK_DATA_ITEM_ID: String(c.data_item_id),
    BENCHMARK_ATTEMPT_NO: String(c.attempt_no),
    BENCHMARK_USER_INPUT: c.user_input,
    BENCHMARK_SESSION_JSONL: c.session_jsonl,
    BENCHMARK_TRACE_ID: c.trace_id ?? '',
    BENCHMARK_CASE_FILE: CASE_FILE_PATH,
  };
}
