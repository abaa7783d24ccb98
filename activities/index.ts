import type { Activities } from '../src/domain/activity-contract';
import { createCaseExecution, type CaseExecutionDeps } from './case-execution';
import { createCaseFinalization } from './case-finalization';
import { createCaseScoring, type CaseScoringDeps } from './case-scoring';
import { createCaseTrajectory } from './case-trajectory';
import { createRunActivities, type RunActivityDeps } from './run-activities';

export type { Activities } from '../src/domain/activity-contract';

/** The union of what the activity families use; src/temporal/case-worker.ts builds it from real clients. */
type ActivityDeps = RunActivityDeps & CaseExecutionDeps & CaseScoringDeps;

/** All activities of the task queue, bound to injected clients. */
export function createActivities(deps: ActivityDeps): Activities {
  return {
    ...createRunActivities(deps),
    ...createCaseExecution(deps),
    ...createCaseTrajectory(deps),
    ...createCaseScoring(deps),
    ...createCaseFinalization(deps),
  };
}
