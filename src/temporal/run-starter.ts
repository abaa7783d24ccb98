import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import type pg from 'pg';
import { caseSpecDefaults, type Config } from '../config';
import type { Logger } from '../logger';
import type { ExperimentRunRequested } from '../domain/message';
import { DEFAULT_STARTUP_TIMEOUT_SECONDS, resolveCaseSpec } from '../domain/runtime-spec';
import { workflowIdForRun, type ExperimentRunInput, type RunSettings } from '../domain/experiment-run';
import { SA } from '../domain/search-attributes';
import { saveRunRequest } from '../db/run-request-repository';
import { protectRunInput } from '../db/run-input-secrets';
import { findMessageRows, type Database } from '../db/experiment-repository';
import { MessageRowsMissingError } from '../db/errors';
import { caseRetryBudgetSeconds } from '../domain/retry-budget';

export interface RunStarterDeps {
  client: Client;
  pool: pg.Pool;
  config: Config;
  log: Logger;
}

/** Slack on top of the case's own timeouts for container create/start/remove and log reads. */
const CASE_ACTIVITY_SLACK_SECONDS = 120;

export function runSettings(config: Config, message: ExperimentRunRequested): RunSettings {
  const defaults = caseSpecDefaults(config);
  let caseTimeout = defaults.caseTimeoutSeconds;
  let startup: number = DEFAULT_STARTUP_TIMEOUT_SECONDS;
  try {
    const spec = resolveCaseSpec(message.agent.runtime_spec_json, defaults);
    caseTimeout = spec.caseTimeoutSeconds;
    startup = spec.startup.timeoutSeconds;
  } catch {
    // An unusable spec fails the run in prepareRun; the defaults are fine until then.
  }
  // Case command and after command each get the case timeout (§6.3), plus startup and slack.
  const caseActivityTimeoutSeconds = 2 * caseTimeout + startup + CASE_ACTIVITY_SLACK_SECONDS;
  return {
    concurrentCases: config.consumer.concurrentCases,
    caseMaxAttempts: config.consumer.maxRetries,
    caseActivityTimeoutSeconds,
    caseRetryBudgetSeconds: caseRetryBudgetSeconds({
      caseActivityTimeoutSeconds,
      caseMaxAttempts: config.consumer.maxRetries,
    }),
    terminationCheckSeconds: 5,
    maxHistoryEvents: 8000,
    scorerConcurrentCases: config.consumer.scorerConcurrentCases,
    scorerHardTimeoutSeconds: config.evaluator.scorerHardTimeoutSeconds,
  };
}

/**
 * Stores what the message says (Postgres; secrets redacted, or sealed with AGENTBENCH_SECRETS_KEY
 * where the agent needs them: src/db/run-input-secrets.ts), in the caller's transaction when given a
 * client in one. Idempotent: a second store for the same workflow id changes nothing.
 */
export async function storeRunRequest(
  db: Database,
  message: ExperimentRunRequested,
  workflowId: string,
  deps: Pick<RunStarterDeps, 'config' | 'log'>,
): Promise<void> {
  const { run_cases: cases, ...request } = message;
  const stored = protectRunInput(request, deps.config.secretsKey);
  if (stored.unsealed.length > 0) {
    deps.log.warn(
      { code: 'W_RUN_INPUT_SECRET_DROPPED', workflow_id: workflowId, paths: stored.unsealed },
      'secret values of the run input (secret-named, or URLs with a password) are stored redacted: set AGENTBENCH_SECRETS_KEY to hand them to the agent',
    );
  }
  await saveRunRequest(db, {
    workflowId,
    experimentId: message.experiment.id,
    messageId: message.message_id,
    request: stored.request,
    cases: cases.map((c) => ({ runCaseId: c.run_case_id, caseInput: c })),
  });
}

/**
 * Stores what the message says and starts its workflow. Idempotent: the workflow id derives from
 * the message, and USE_EXISTING / REJECT_DUPLICATE make a redelivered or re-published message return
 * the existing run instead of starting a second one.
 */
export async function startExperimentRun(
  deps: RunStarterDeps,
  message: ExperimentRunRequested,
  dedupSuffix: string,
  overrides: Partial<RunSettings> = {},
): Promise<{ workflowId: string; started: boolean }> {
  const workflowId = workflowIdForRun(message.experiment.id, dedupSuffix);
  await storeRunRequest(deps.pool, message, workflowId, deps);
  return startStoredRun(deps, message, workflowId, overrides);
}

/** At most this many missing ids are named in an E_RUN_CASE_NOT_FOUND error. */
const MISSING_IDS_SHOWN = 10;

/**
 * The bridge's start: a message whose experiment or run cases are not in the platform's tables is
 * refused with a MessageRowsMissingError (the bridge dead-letters it under its code) before anything
 * is stored or started — as a run it would only cancel every case and end "completed".
 */
export async function startRequestedRun(
  deps: RunStarterDeps,
  message: ExperimentRunRequested,
  dedupSuffix: string,
): Promise<{ workflowId: string; started: boolean }> {
  const experimentId = message.experiment.id;
  const rows = await findMessageRows(
    deps.pool,
    experimentId,
    message.run_cases.map((c) => c.run_case_id),
  );
  if (!rows.experiment)
    throw new MessageRowsMissingError('E_EXPERIMENT_NOT_FOUND', `experiment ${experimentId} does not exist`);
  const missing = rows.missingRunCaseIds;
  if (missing.length > 0) {
    const shown = missing.slice(0, MISSING_IDS_SHOWN).join(', ');
    throw new MessageRowsMissingError(
      'E_RUN_CASE_NOT_FOUND',
      `${missing.length} of ${message.run_cases.length} run cases are not rows of experiment ${experimentId}: ${shown}${missing.length > MISSING_IDS_SHOWN ? ', …' : ''}`,
    );
  }
  return startExperimentRun(deps, message, dedupSuffix);
}

/**
 * The Temporal half of a start, for a run whose request is stored already (`storeRunRequest`); the
 * message may be the stored, redacted one. Same idempotency as startExperimentRun.
 */
export async function startStoredRun(
  deps: RunStarterDeps,
  message: ExperimentRunRequested,
  workflowId: string,
  overrides: Partial<RunSettings> = {},
): Promise<{ workflowId: string; started: boolean }> {
  const { client, config } = deps;
  const cases = message.run_cases;
  const existed = await client.workflow
    .getHandle(workflowId)
    .describe()
    .then(() => true)
    .catch(() => false);
  const input: ExperimentRunInput = {
    experimentId: message.experiment.id,
    messageId: message.message_id,
    totalCases: cases.length,
    settings: { ...runSettings(config, message), ...overrides },
  };
  try {
    await client.workflow.start('experimentRunWorkflow', {
      workflowId,
      taskQueue: config.temporal.taskQueue,
      args: [input],
      workflowIdConflictPolicy: 'USE_EXISTING',
      workflowIdReusePolicy: 'REJECT_DUPLICATE',
      typedSearchAttributes: [
        { key: SA.experimentId, value: String(message.experiment.id) },
        { key: SA.deploymentId, value: config.deploymentId },
        { key: SA.datasetId, value: String(message.dataset.id) },
        { key: SA.agentKey, value: message.agent.agent_key },
        { key: SA.agentVersion, value: message.agent.version },
        { key: SA.triggeredBy, value: message.experiment.triggered_by },
        { key: SA.casesTotal, value: cases.length },
        { key: SA.casesDone, value: 0 },
        { key: SA.casesFailed, value: 0 },
      ],
      memo: {
        dataset: message.dataset.name,
        agent: `${message.agent.name} (${message.agent.agent_key}@${message.agent.version})`,
        messageId: message.message_id,
      },
    });
  } catch (err) {
    // REJECT_DUPLICATE: this message's run already finished. Nothing to do.
    if (err instanceof WorkflowExecutionAlreadyStartedError) return { workflowId, started: false };
    throw err;
  }
  return { workflowId, started: !existed };
}
