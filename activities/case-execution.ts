import { Context } from '@temporalio/activity';
import { CancelledFailure } from '@temporalio/common';
import { isTerminalStatus } from '../src/domain/case-status';
import type { CaseExecutionSummary, CaseRef } from '../src/domain/experiment-run';
import { parseAgentStdout } from '../src/domain/agent-output';
import { anyScorerCallsJudge } from '../src/domain/judge-score';
import { assembleCaseLogs, caseOutcome, CONTAINER_LOG_TAIL_CHARS } from '../src/domain/case-logs';
import { buildCommandContext, renderCommandTemplate } from '../src/domain/template';
import type { RunCaseInput, ExperimentRunRequested } from '../src/domain/message';
import type { RuntimeSpec } from '../src/domain/runtime-spec';
import {
  saveCaseResult,
  type CaseRawResult,
  type CaseTrajectory,
  type StoredCaseResult,
} from '../src/db/case-result-repository';
import { loadCaseStart } from '../src/db/case-start-repository';
import { transitionCaseStatus } from '../src/db/run-case-repository';
import { caseContainerName, LABELS } from '../src/docker/labels';
import type { ActivityDeps } from './activity-deps';
import { openCaseNetwork } from './case-network';
import { parseCaseInput } from './run-request-cache';
import { createCaseFinalizer } from './case-finalization';
import { computeTrajectory } from './case-trajectory';

/** Where every case container finds its own case as JSON (ARCHITECTURE §5 item 9). */
export const CASE_FILE_PATH = '/benchmark/case.json';
/** Also how fast a cancel reaches a running case: cancellations are delivered in heartbeat responses. */
export const HEARTBEAT_INTERVAL_MS = 2_000;

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
export function createInlineFinisher(deps: ActivityDeps) {
  const finalizeFromPhases = createCaseFinalizer(deps);
  return async function finishInline(
    ref: CaseRef & { finishInline?: boolean },
    stored: StoredCaseResult,
    summary: CaseExecutionSummary,
    log: ActivityDeps['log'],
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
        { code: 'CASE_INLINE_FINALIZE_FAILED', err: err instanceof Error ? err.message : String(err) },
        'finishing the case in the container phase failed; the workflow runs trajectory and finalize as activities',
      );
      return summary;
    }
  };
}

function inlineEligible(
  ref: { finishInline?: boolean },
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
  deps: ActivityDeps,
  ref: CaseRef & { finishInline?: boolean },
  raw: CaseRawResult,
  summary: CaseExecutionSummary,
  log: ActivityDeps['log'],
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
        { code: 'CASE_INLINE_FINALIZE_FAILED', err: err instanceof Error ? err.message : String(err) },
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
export function createCaseExecution(deps: ActivityDeps) {
  const { pool, sandbox, config } = deps;
  const finishInline = createInlineFinisher(deps);

  /** `finishInline`: the workflow accepts a case finished here (runs that recorded the fast-path marker). */
  async function executeCase(ref: CaseRef & { finishInline?: boolean }): Promise<CaseExecutionSummary> {
    const ctx = Context.current();
    const { workflowId, experimentId, runCaseId } = ref;
    const attempt = ctx.info.attempt;
    const log = deps.log.child({
      workflow_id: workflowId,
      experiment_id: experimentId,
      run_case_id: runCaseId,
      attempt,
    });

    const phaseStart = Date.now();
    // A previous attempt may have died with its container alive (worker killed): remove it first.
    // (A first attempt has no predecessor; a leftover of its fixed name is replaced by createAndStart.)
    if (attempt > 1) {
      const previous = ctx.info.heartbeatDetails as HeartbeatDetails | undefined;
      if (previous?.containerId) await sandbox.remove(previous.containerId);
      for (const c of await sandbox.listManagedContainers({ workflowId, runCaseId }))
        await sandbox.remove(c.id);
    }

    // The reads on the critical path of every case: one round trip (the run request is cached).
    const [start, run] = await Promise.all([loadCaseStart(pool, ref), deps.runRequests.get(workflowId)]);
    if (start.stored)
      return finishInline(ref, start.stored, summarize(start.stored.result, run.request.scorers), log);
    const { status } = start;
    if (status === undefined || isTerminalStatus(status)) {
      log.info({ code: 'CASE_NOT_ACTIVE', status }, 'case is no longer active; not executing');
      return { status: 'not_active', errorMessage: null, exitCode: null };
    }
    const caseInput = parseCaseInput(workflowId, runCaseId, start.caseInput);

    if (!run.spec) throw new Error(run.specError ?? 'runtime spec invalid');
    const spec = run.spec;

    await transitionCaseStatus(pool, { experimentId, runCaseId, to: 'running' });
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
      const message = err instanceof Error ? err.message : String(err);
      const failed = await saveCaseResult(
        pool,
        workflowId,
        runCaseId,
        failedBeforeExec(message, spec, startedAt, attempt),
      );
      return summarize(failed.result, run.request.scorers);
    }

    const timeoutSeconds = spec.caseTimeoutSeconds ?? config.consumer.caseTimeoutSeconds;
    let mockRequests: unknown[] = [];
    let telemetryComplete = false;
    const result = await deps.liveContainers
      .run(async () => {
        const connectStart = Date.now();
        const { containerId, name, addresses } = await sandbox.createAndStart({
          name: caseContainerName(workflowId, runCaseId, attempt),
          image: spec.agentImage,
          startCommand: commands.start,
          env: { ...caseEnv(run.request, caseInput, spec), ...network.env },
          labels: {
            [LABELS.managed]: 'true',
            [LABELS.experimentId]: String(experimentId),
            [LABELS.runCaseId]: String(runCaseId),
            [LABELS.workflowId]: workflowId,
            [LABELS.attempt]: String(attempt),
            [LABELS.createdAt]: new Date().toISOString(),
          },
          network: network.network ?? spec.dockerNetwork,
          files: [
            {
              path: CASE_FILE_PATH,
              content: JSON.stringify(caseFile(run.request, caseInput), null, 2),
              mode: 0o644,
            },
            ...network.files,
          ],
          limits: {
            memoryMb: spec.memoryMb ?? config.sandbox.defaultMemoryMb,
            cpus: spec.cpus ?? config.sandbox.defaultCpus,
            pidsLimit: spec.pidsLimit ?? config.sandbox.defaultPidsLimit,
          },
          hardening: {
            noNewPrivileges: config.sandbox.noNewPrivileges,
            dropAllCapabilities: config.sandbox.dropAllCapabilities,
          },
          user: spec.user,
          startupTimeoutSeconds: spec.startupTimeoutSeconds,
          startupPollIntervalSeconds: spec.startupPollIntervalSeconds,
        });
        let phase = 'case_exec';
        network.bindContainer(addresses);
        // The first heartbeat goes out after HEARTBEAT_INTERVAL_MS, not at once: a heartbeat is a server
        // write, and for short cases an immediate one cost ~10% of the container phase on 2 cores
        // (bench/sandbox-overhead). Nothing depends on it earlier: a retry also finds the previous
        // attempt's container by its labels, a dead worker is noticed by the heartbeat timeout counted
        // from the activity start, and a cancel requested before it arrives with its response.
        const beat = setInterval(
          () => ctx.heartbeat({ containerId, phase } satisfies HeartbeatDetails),
          HEARTBEAT_INTERVAL_MS,
        );
        try {
          const sandboxConnectMs = Date.now() - connectStart;
          const execStart = Date.now();
          const caseRun = await sandbox.execUntilAgentReady(containerId, {
            command: commands.exec,
            timeoutMs: timeoutSeconds * 1000,
            signal: ctx.cancellationSignal,
            startupTimeoutSeconds: spec.startupTimeoutSeconds,
            startupPollIntervalSeconds: spec.startupPollIntervalSeconds,
            onRetry: (n, retryInMs) =>
              log.info(
                { code: 'CASE_EXEC_WAIT_AGENT_READY', attempt: n, retry_in: retryInMs / 1000 },
                'agent not ready',
              ),
          });
          let after: Awaited<ReturnType<typeof sandbox.exec>> | null = null;
          if (!caseRun.timedOut && commands.after) {
            phase = 'after_exec';
            after = await sandbox.exec(containerId, {
              command: commands.after,
              timeoutMs: timeoutSeconds * 1000,
              signal: ctx.cancellationSignal,
            });
          }
          const caseExecMs = Date.now() - execStart;
          phase = 'collect';
          const containerLogs = await sandbox.logs(containerId, CONTAINER_LOG_TAIL_CHARS);
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
            : caseOutcome({ caseExitCode: caseRun.exitCode, afterExitCode: after ? after.exitCode : null });
          const raw: CaseRawResult = {
            ...outcome,
            agentOutput: timedOut ? null : parsed.output,
            logs,
            stdoutTrajectory: parsed.stdoutTrajectory,
            agentUsage: parsed.usage,
            timings: { sandboxConnectMs, caseExecMs, totalMs: Date.now() - connectStart },
            startedAt: startedAt.toISOString(),
            finishedAt: new Date().toISOString(),
            image: spec.agentImage,
            containerName: name,
            attempt,
          };
          return raw;
        } finally {
          clearInterval(beat);
          await sandbox.remove(containerId);
        }
      })
      .catch((err: unknown) => {
        if (ctx.cancellationSignal.aborted) {
          log.info({ code: 'CASE_EXEC_CANCELED' }, 'case canceled; container removed');
          throw new CancelledFailure('case canceled');
        }
        throw err;
      })
      .finally(() =>
        network.close().then((closed) => {
          mockRequests = closed.requests;
          telemetryComplete = closed.telemetryComplete;
        }),
      );
    result.timings.containerPhaseMs = Date.now() - phaseStart;
    if (mockRequests.length > 0) result.mockRequests = mockRequests;
    result.telemetryComplete = telemetryComplete;
    const summary = summarize(result, run.request.scorers);
    const stored = await storeCaseResult(deps, ref, result, summary, log);
    // A stored record from an earlier attempt wins over this one (first write wins).
    return finishInline(
      ref,
      stored,
      stored.result === result ? summary : summarize(stored.result, run.request.scorers),
      log,
    );
  }

  return { executeCase };
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
  spec: RuntimeSpec,
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

function caseEnv(req: ExperimentRunRequested, c: RunCaseInput, spec: RuntimeSpec): Record<string, string> {
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
