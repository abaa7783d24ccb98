// The worker bundles this file: every workflow type the task queue serves is exported here.
export { experimentRunWorkflow, progressQuery } from './experiment-run';
