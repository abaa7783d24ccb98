import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import type pg from 'pg';
import type { Config } from '../config';
import type { Logger } from '../logger';
import type { ExperimentRunRequested } from '../domain/message';
import { parseRuntimeSpec } from '../domain/runtime-spec';
import { redactSecrets } from '../domain/runtime-snapshot';
import { workflowIdForRun, type ExperimentRunInput, type RunSettings } from '../domain/experiment-run';
import { SA } from '../domain/search-attributes';
import { saveRunRequest } from '../db/run-request-repository';

export interface RunStarterDeps {
  client: Client;
  pool: pg.Pool;
  config: Config;
  log: Logger;
}

/** Slack on top of the case's own timeouts for container create/start/remove and log reads. */
const CASE_ACTIVITY_SLACK_SECONDS = 120;

export function runSettings(config: Config, message: ExperimentRunRequested): RunSettings {
  let caseTimeout = config.consumer.caseTimeoutSeconds;
  let startup = 30;
  try {
    const spec = parseRuntimeSpec(message.agent.runtime_spec_json);
    caseTimeout = spec.caseTimeoutSeconds ?? caseTimeout;
    startup = spec.startupTimeoutSeconds;
  } catch {
    // An unusable spec fails the run in prepareRun; the defaults are fine until then.
  }
  return {
    concurrentCases: config.consumer.concurrentCases,
    caseMaxAttempts: config.consumer.maxRetries,
    // Case command and after command each get the case timeout (§6.3), plus startup and slack.
    caseActivityTimeoutSeconds: 2 * caseTimeout + startup + CASE_ACTIVITY_SLACK_SECONDS,
    terminationCheckSeconds: 5,
    maxHistoryEvents: 8000,
    scorerConcurrentCases: config.consumer.scorerConcurrentCases,
    scorerHardTimeoutSeconds: config.evaluator.scorerHardTimeoutSeconds,
  };
}

/**
 * Stores what the message says (Postgres, secrets redacted) and starts its workflow. Idempotent:
 * the workflow id derives from the message, and USE_EXISTING / REJECT_DUPLICATE make a redelivered
 * or re-published message return the existing run instead of starting a second one.
 */
export async function startExperimentRun(
  deps: RunStarterDeps,
  message: ExperimentRunRequested,
  dedupSuffix: string,
  overrides: Partial<RunSettings> = {},
): Promise<{ workflowId: string; started: boolean }> {
  const { client, pool, config } = deps;
  const workflowId = workflowIdForRun(message.experiment.id, dedupSuffix);
  const { run_cases: cases, ...request } = message;
  await saveRunRequest(pool, {
    workflowId,
    experimentId: message.experiment.id,
    messageId: message.message_id,
    request: redactSecrets(request) as object,
    cases: cases.map((c) => ({ runCaseId: c.run_case_id, caseInput: c })),
  });

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
