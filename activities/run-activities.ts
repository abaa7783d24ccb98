import { Context } from '@temporalio/activity';
import type { RunOutcome } from '../src/domain/experiment-run';
import { getExperimentQueueState } from '../src/db/experiment-repository';
import { listCaseIds, type CaseCursorEntry } from '../src/db/run-request-repository';
import { markCasesQueued } from '../src/db/run-case-repository';
import { cancelRunCases, failRunCases } from '../src/db/run-control-repository';
import type { ActivityDeps } from './activity-deps';

export interface RunRef {
  workflowId: string;
  experimentId: number;
  messageId: string;
}

export interface PrepareRunResult {
  skip?: Extract<RunOutcome, 'skipped_manual_terminated' | 'skipped_stale'>;
  detail?: string;
  /** Set when the run could not start; every case has been recorded failed with this text. */
  failure?: string;
  /** With `failure`: how many cases that recorded as failed (the worker's cases_finished metric reads it). */
  failedCases?: number;
}

const ID_PAGE = 1000;

export function createRunActivities(deps: ActivityDeps) {
  const { pool, log, runRequests } = deps;

  async function allCaseIds(workflowId: string): Promise<number[]> {
    const ids: number[] = [];
    for (let after = 0; ;) {
      const page = await listCaseIds(pool, workflowId, after, ID_PAGE);
      if (page.length === 0) return ids;
      for (const c of page) ids.push(c.runCaseId);
      after = page[page.length - 1]?.position ?? after;
    }
  }

  /**
   * CONTRACT §3.3 skip rules, then everything that happens once per run before any case starts:
   * runtime-spec validation, cases → queued, and the image pull (one per run, not one per case).
   */
  async function prepareRun(ref: RunRef): Promise<PrepareRunResult> {
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
    await markCasesQueued(pool, experimentId, await allCaseIds(workflowId));

    try {
      await deps.images.ensureImage(run.spec.agentImage, run.spec.pullPolicy, run.spec.pullTimeoutSeconds);
    } catch (err) {
      // Pull failures are infra failures: retried with backoff, up to CONSUMER_MAX_RETRIES attempts.
      if (Context.current().info.attempt < deps.config.consumer.maxRetries) throw err;
      return failAll(ref, err instanceof Error ? err.message : String(err));
    }
    return {};
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
