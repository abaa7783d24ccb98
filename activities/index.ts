import type { ActivityDeps } from './activity-deps';
import { createCaseExecution } from './case-execution';
import { createCaseFinalization } from './case-finalization';
import { createCaseScoring } from './case-scoring';
import { createCaseTrajectory } from './case-trajectory';
import { createRunActivities } from './run-activities';

export type { ActivityDeps, CaseTelemetry } from './activity-deps';
export { RunRequestCache } from './run-request-cache';

/** All activities of the task queue, bound to injected clients. */
export function createActivities(deps: ActivityDeps) {
  return {
    ...createRunActivities(deps),
    ...createCaseExecution(deps),
    ...createCaseTrajectory(deps),
    ...createCaseScoring(deps),
    ...createCaseFinalization(deps),
  };
}

export type Activities = ReturnType<typeof createActivities>;
