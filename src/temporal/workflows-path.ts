import path from 'node:path';

/** The module the worker bundles: every workflow type the task queue serves. */
export const WORKFLOWS_PATH = path.resolve(__dirname, '../../workflows/index.ts');
