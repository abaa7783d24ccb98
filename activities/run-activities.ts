import { Context } from '@temporalio/activity';
import type { RunOutcome } from '../src/domain/experiment-run';
import { getExperimentQueueState } from '../src/db/experiment-repository';
import { listCaseIds, type CaseCursorEntry } from '../src/db/run-request-repository';
import { cancelRunCases, failRunCases, queueRunCases } from '../src/db/run-control-repository';
import type { ActivityDeps } from './activity-deps';

export interface RunRef {
  workflowId: string;
  experimentId: number;
  messageId: string;
}

export interface PrepareRunInput extends RunRef {
  /**
   * When set, the result carries the run's first page of cases (what `listCasePage` from position 0
   * with this limit returns), so the workflow starts its first case without another activity.
   */
  firstPageLimit?: number;
}

export interface PrepareRunResult {
  skip?: Extract<RunOutcome, 'skipped_manual_terminated' | 'skipped_stale'>;
  detail?: string;
  /** Set when the run could not start; every case has been recorded failed with this text. */
  failure?: string;
  /** With `failure`: how many cases that recorded as failed (the worker's cases_finished metric reads it). */
  failedCases?: number;
  /** With `firstPageLimit`, when the run may start: its first cases in message order. */
  firstPage?: CaseCursorEntry[];
}

export function createRunActivities(deps: ActivityDeps) {
  const { pool, log, runRequests } = deps;

  /**
   * CONTRACT §3.3 skip rules, then everything that happens once per run before any case starts:
   * runtime-spec validation, cases → queued, and the image pull (one per run, not one per case).
   */
  async function prepareRun(input: PrepareRunInput): Promise<PrepareRunResult> {
    const { firstPageLimit, ...ref } = input;
    const { workflowId, experimentId, messageId } = ref;
    const state = await getExperimentQueueState(pool, experimentId);
    if (state.queueStatus === 'manual_terminated') {
      log.info(
        { code: 'MESSAGE_SKIPPED_MANUAL_TERMINATED', experiment_id: experimentId, message_id: messageId },
        'skipped',
      );
      return { skip: 'skipped_manual_terminated', detail: 'experiment is manual_terminated' };
    }
    if (state.queueMessageId && state.queueMessageId !== messageId) {
      log.info(
        {
          code: 'MESSAGE_SKIPPED_STALE',
          message_id: messageId,
          expected_message_id: state.queueMessageId,
          experiment_id: experimentId,
        },
        'skipped stale message',
      );
      return { skip: 'skipped_stale', detail: `experiment expects message ${state.queueMessageId}` };
    }
    log.info(
      { code: 'EXPERIMENT_EXEC_START', experiment_id: experimentId, workflow_id: workflowId },
      'experiment run starts',
    );

    const run = await deps.runRequests.get(workflowId);
    if (!run.spec) return failAll(ref, run.specError ?? 'E_SANDBOX_RUNTIME_SPEC_INVALID');
    // One statement marks every case of the run queued; the first page is read alongside it (the
    // case list of a run never changes, so the order of the two does not matter).
    const [, firstPage] = await Promise.all([
      queueRunCases(pool, { workflowId, experimentId }),
      firstPageLimit === undefined ? undefined : listCaseIds(pool, workflowId, 0, firstPageLimit),
    ]);

    try {
      await deps.images.ensureImage(run.spec.agentImage, run.spec.pullPolicy, run.spec.pullTimeoutSeconds);
    } catch (err) {
      // Pull failures are infra failures: retried with backoff, up to CONSUMER_MAX_RETRIES attempts.
      if (Context.current().info.attempt < deps.config.consumer.maxRetries) throw err;
      return failAll(ref, err instanceof Error ? err.message : String(err));
    }
    return firstPage ? { firstPage } : {};
  }

  async function failAll(ref: RunRef, reason: string): Promise<PrepareRunResult> {
    const failed = await failRunCases(pool, {
      workflowId: ref.workflowId,
      experimentId: ref.experimentId,
      errorMessage: reason,
    });
    log.error(
      {
        code: 'E_RUN_START_FAILED',
        experiment_id: ref.experimentId,
        workflow_id: ref.workflowId,
        failed,
        err: reason,
      },
      'run could not start',
    );
    return { failure: reason, failedCases: failed };
  }

  async function listCasePage(p: {
    workflowId: string;
    afterPosition: number;
    limit: number;
  }): Promise<CaseCursorEntry[]> {
    return listCaseIds(pool, p.workflowId, p.afterPosition, p.limit);
  }

  /** Re-read while the run is in flight, so the platform's termination is honoured mid-run. */
  async function checkRunState(ref: RunRef): Promise<{ stop: string | null }> {
    const state = await getExperimentQueueState(pool, ref.experimentId);
    if (state.queueStatus === 'manual_terminated') return { stop: 'manual terminated by the platform' };
    if (state.queueMessageId && state.queueMessageId !== ref.messageId) {
      return { stop: `superseded by message ${state.queueMessageId}` };
    }
    return { stop: null };
  }

  async function cancelRun(p: {
    workflowId: string;
    experimentId: number;
    reason: string;
    markExperimentTerminated: boolean;
  }): Promise<number> {
    const canceled = await cancelRunCases(pool, {
      workflowId: p.workflowId,
      experimentId: p.experimentId,
      reason: p.reason,
      terminateExperiment: p.markExperimentTerminated,
    });
    runRequests.forget(p.workflowId);
    log.info(
      {
        code: 'EXPERIMENT_RUN_CANCELED',
        experiment_id: p.experimentId,
        workflow_id: p.workflowId,
        canceled,
        reason: p.reason,
      },
      'run canceled',
    );
    return canceled;
  }

  return { prepareRun, listCasePage, checkRunState, cancelRun };
}
