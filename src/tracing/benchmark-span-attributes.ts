import type { Attributes, AttributeValue } from '@opentelemetry/api';

/**
 * The ids that make an orchestrator span findable by experiment and case, read from what every
 * span already has at hand — the workflow id (`experiment-<id>-<message>`) and the activity id
 * (`case-<runCaseId>/<phase>`) — so no payload is ever decoded for them. The keys are those the
 * agents' own spans carry (OTEL_RESOURCE_ATTRIBUTES of a case container), as strings like there,
 * so one query finds a case's agent spans and the orchestrator's spans around them.
 */

export const EXPERIMENT_ID_ATTR = 'benchmark.experiment_id';
const RUN_CASE_ID_ATTR = 'benchmark.run_case_id';
const CASE_PHASE_ATTR = 'benchmark.case_phase';
/** The key @temporalio/interceptors-opentelemetry uses on activity spans; added to workflow spans too. */
export const WORKFLOW_ID_ATTR = 'temporalWorkflowId';

const WORKFLOW_ID = /^experiment-(\d+)-/;
const ACTIVITY_ID = /^case-(\d+)\/([a-z_]+)$/;

export function workflowSpanIds(workflowId: string | undefined): Attributes {
  if (!workflowId) return {};
  const experiment = WORKFLOW_ID.exec(workflowId)?.[1];
  return { [WORKFLOW_ID_ATTR]: workflowId, ...(experiment ? { [EXPERIMENT_ID_ATTR]: experiment } : {}) };
}

/** Run-level activities (prepareRun, cancelRun, …) have numeric ids and get the workflow's ids only. */
export function activitySpanIds(workflowId: string | undefined, activityId: string): Attributes {
  const m = ACTIVITY_ID.exec(activityId);
  return {
    ...workflowSpanIds(workflowId),
    ...(m?.[1] && m[2] ? { [RUN_CASE_ID_ATTR]: m[1], [CASE_PHASE_ATTR]: m[2] } : {}),
  };
}

function isScalar(v: unknown): v is string | number | boolean {
  return typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';
}

/**
 * Workflow spans reach the worker with the whole WorkflowInfo merged into their attributes by
 * @temporalio/interceptors-opentelemetry (memo, search attributes, retry policy, Dates, the
 * `unsafe` object with functions). Only scalar values (and arrays of them) are kept: the ids,
 * types, attempt and history counters that matter, and nothing a future memo field could carry.
 */
export function workflowSpanAttributes(attributes: Attributes): Attributes {
  const kept: Attributes = {};
  for (const [key, value] of Object.entries(attributes)) {
    if (
      isScalar(value) ||
      (Array.isArray(value) && value.every((v) => v === null || v === undefined || isScalar(v)))
    ) {
      kept[key] = value as AttributeValue;
    }
  }
  const workflowId = typeof attributes.workflowId === 'string' ? attributes.workflowId : undefined;
  return { ...kept, ...workflowSpanIds(workflowId) };
}
