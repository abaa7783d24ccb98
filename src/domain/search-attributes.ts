import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/**
 * Typed search attributes of ARCHITECTURE §3, so a run can be found in the Temporal Web UI by
 * experiment id. Experiment ids are per platform database, so two deployments sharing a namespace
 * both have an experiment 3: every lookup by experiment also filters by the deployment
 * (Config.deploymentId), set at the workflow's start (src/temporal/run-lookup.ts). Registered on the local dev server from this list (src/temporal/dev-server.ts, used
 * by scripts/setup and `benchctl run`) and in production with `temporal operator search-attribute
 * create` (see README).
 */
export const SA = {
  experimentId: defineSearchAttributeKey('ExperimentId', SearchAttributeType.KEYWORD),
  deploymentId: defineSearchAttributeKey('AgentbenchDeploymentId', SearchAttributeType.KEYWORD),
  datasetId: defineSearchAttributeKey('DatasetId', SearchAttributeType.KEYWORD),
  agentKey: defineSearchAttributeKey('AgentKey', SearchAttributeType.KEYWORD),
  agentVersion: defineSearchAttributeKey('AgentVersion', SearchAttributeType.KEYWORD),
  triggeredBy: defineSearchAttributeKey('TriggeredBy', SearchAttributeType.KEYWORD),
  casesTotal: defineSearchAttributeKey('CasesTotal', SearchAttributeType.INT),
  casesDone: defineSearchAttributeKey('CasesDone', SearchAttributeType.INT),
  casesFailed: defineSearchAttributeKey('CasesFailed', SearchAttributeType.INT),
} as const;
