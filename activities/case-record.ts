import type { CaseRef } from '../src/domain/activity-contract';
import { parseAgentStdout } from '../src/domain/agent-output';
import { assembleCaseLogs, caseOutcome } from '../src/domain/case-logs';
import type { ResolvedCaseSpec } from '../src/domain/runtime-spec';
import type { CaseRawResult } from '../src/db/case-result-repository';
import type { ExecResult } from '../src/docker/docker-sandbox';
import type { Logger } from '../src/logger';

/**
 * An attempt's record from what its container did: the case command's run, the after command's
 * (null while it has not run: the record spooled the moment the agent exits), the container's logs.
 */
export function caseRecord(p: {
  ref: Pick<CaseRef, 'workflowId' | 'runCaseId'>;
  attempt: number;
  spec: ResolvedCaseSpec;
  containerName: string;
  caseRun: ExecResult;
  after: ExecResult | null;
  containerLogs: string;
  startedAt: Date;
  /** Epoch ms: when the container start and the case command began; and the two phases' lengths. */
  times: { connectStart: number; execStart: number; sandboxConnectMs: number; caseExecMs: number };
}): CaseRawResult {
  const { caseRun, after, spec, times } = p;
  const timeoutSeconds = spec.caseTimeoutSeconds;
  const parsed = parseAgentStdout(caseRun.stdout, caseRun.stderr);
  const logs = assembleCaseLogs({
    execStdout: caseRun.stdout,
    execStderr: caseRun.stderr,
    afterLogs: after ? `${after.stdout}\n${after.stderr}`.trim() : null,
    logsOverride: parsed.logsOverride,
    containerLogs: p.containerLogs,
    footer: `[agentbench] workflow_id=${p.ref.workflowId} run_case_id=${p.ref.runCaseId} attempt=${p.attempt}`,
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
      sandboxConnectMs: times.sandboxConnectMs,
      caseExecMs: after ? Date.now() - times.execStart : times.caseExecMs,
      totalMs: Date.now() - times.connectStart,
    },
    startedAt: p.startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    image: spec.agentImage,
    containerName: p.containerName,
    attempt: p.attempt,
  };
}

/**
 * A spooled record of an attempt cut after its case command, before its after command: the case
 * command's outcome stands (the agent is not run again), but a successful one cannot pass as a
 * success whose after command never ran.
 */
export function afterCommandLost(raw: CaseRawResult, log: Logger): CaseRawResult {
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

export function failedBeforeExec(
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
