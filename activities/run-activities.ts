import { Context } from '@temporalio/activity';
import type {
  CancelRunInput,
  CaseCursorEntry,
  CasePageInput,
  PrepareRunInput,
  PrepareRunResult,
  RunActivities,
  RunRef,
  RunStateCheck,
} from '../src/domain/activity-contract';
import { errorText } from '../src/domain/errors';
import type { PullPolicy } from '../src/domain/runtime-spec';
import { getExperimentQueueState } from '../src/db/experiment-repository';
import { listCaseIds } from '../src/db/run-request-repository';
import { cancelRunCases, failRunCases, queueRunCases } from '../src/db/run-control-repository';
import { recordRunEnd } from '../src/db/result-event-outbox';
import { activity } from './activity-boundary';
import { rideOutOutage } from './infra-outage';

/** How long prepareRun waits for an unreachable Docker daemon before the pull counts as failed. */
const PULL_OUTAGE_BUDGET_MS = 60_000;
import type { DatabaseDeps, RunRequests } from './activity-deps';
import { specImages } from '../src/domain/task-runtime';

/** Makes a run's agent image available (src/docker/image-puller). */
export interface ImageStore {
  ensureImage(image: string, policy: PullPolicy, pullTimeoutSeconds: number): Promise<unknown>;
}

export interface RunActivityDeps extends DatabaseDeps {
  runRequests: RunRequests;
  images: ImageStore;
  /** CONSUMER_MAX_RETRIES: attempts of a run's image pull before the run fails as a whole. */
  pullAttempts: number;
}

export function createRunActivities(deps: RunActivityDeps): RunActivities {
  const { pool, log, runRequests } = deps;

  /**
   * CONTRACT §3.3 skip rules, then everything that happens once per run before any case starts:
   * the runtime spec resolved (an unusable one fails the run), cases → queued, and the image pull
   * (one per run, not one per case).
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
      return skipRun(ref, 'skipped_manual_terminated', 'experiment is manual_terminated');
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
      return skipRun(ref, 'skipped_stale', `experiment expects message ${state.queueMessageId}`);
    }
    log.info(
      { code: 'EXPERIMENT_EXEC_START', experiment_id: experimentId, workflow_id: workflowId },
      'experiment run starts',
    );

    const run = await deps.runRequests.get(workflowId);
    if (!run.spec) return failAll(ref, run.specError.message);
    const spec = run.spec;
    // One statement marks every case of the run queued; the first page is read alongside it (the
    // case list of a run never changes, so the order of the two does not matter).
    const [, firstPage] = await Promise.all([
      queueRunCases(pool, { workflowId, experimentId }),
      firstPageLimit === undefined ? undefined : listCaseIds(pool, workflowId, 0, firstPageLimit),
    ]);

    try {
      // A batch's spec names one runtime image per task type (task_runtimes): every one is checked.
      for (const image of specImages({
        ...run.request.agent.runtime_spec_json,
        agent_image: spec.agentImage,
      }))
        // A Docker daemon restarting as the run starts is waited out (by time, within this
        // activity's 2 minutes); only what remains counts against CONSUMER_MAX_RETRIES.
        await rideOutOutage(() => deps.images.ensureImage(image, spec.pullPolicy, spec.pullTimeoutSeconds), {
          what: 'ensure image',
          log,
          budgetMs: PULL_OUTAGE_BUDGET_MS,
          onWait: () => Context.current().heartbeat(),
        });
    } catch (err) {
      // Pull failures are infra failures: retried with backoff, up to CONSUMER_MAX_RETRIES attempts.
      if (Context.current().info.attempt < deps.pullAttempts) throw err;
      return failAll(ref, errorText(err));
    }
    return firstPage ? { firstPage } : {};
  }

  /** A skipped run still ends: its result event says so (its cases are left as they are). */
  async function skipRun(
    ref: RunRef,
    skip: NonNullable<PrepareRunResult['skip']>,
    detail: string,
  ): Promise<PrepareRunResult> {
    await recordRunEnd(pool, {
      workflowId: ref.workflowId,
      experimentId: ref.experimentId,
      reason: `${skip}: ${detail}`,
      resultEvents: deps.resultEvents,
    });
    return { skip, detail };
  }

  async function failAll(ref: RunRef, reason: string): Promise<PrepareRunResult> {
    const failed = await failRunCases(pool, {
      workflowId: ref.workflowId,
      experimentId: ref.experimentId,
      errorMessage: reason,
      resultEvents: deps.resultEvents,
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

  async function listCasePage(p: CasePageInput): Promise<CaseCursorEntry[]> {
    return listCaseIds(pool, p.workflowId, p.afterPosition, p.limit);
  }

  /** Re-read while the run is in flight, so the platform's termination is honoured mid-run. */
  async function checkRunState(ref: RunRef): Promise<RunStateCheck> {
    const state = await getExperimentQueueState(pool, ref.experimentId);
    if (state.queueStatus === 'manual_terminated') return { stop: 'manual terminated by the platform' };
    if (state.queueMessageId && state.queueMessageId !== ref.messageId) {
      return { stop: `superseded by message ${state.queueMessageId}` };
    }
    return { stop: null };
  }

  async function cancelRun(p: CancelRunInput): Promise<number> {
    const canceled = await cancelRunCases(pool, {
      workflowId: p.workflowId,
      experimentId: p.experimentId,
      reason: p.reason,
      terminateExperiment: p.markExperimentTerminated,
      resultEvents: deps.resultEvents,
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

  return {
    prepareRun: activity(prepareRun),
    listCasePage: activity(listCasePage),
    checkRunState: activity(checkRunState),
    cancelRun: activity(cancelRun),
  };
}
