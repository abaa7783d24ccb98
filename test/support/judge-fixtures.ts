import type { JudgedCaseInput, JudgedCaseRecord } from '../../src/domain/judge-score';

/** The case of the original's test_inspect_runner_score_payload (CONTRACT §11). */
export const caseInput: JudgedCaseInput = {
  dataItemId: 100,
  userInput: 'hello',
  sessionJsonl: '[{"type":"message"}]',
  referenceTrajectory: [{ step: 1, name: 'reference' }],
  referenceOutput: { target: 'done' },
  traceId: 'trace-1',
};

export const caseRecord: JudgedCaseRecord = {
  status: 'success',
  output: { answer: 'done' },
  trajectory: [{ step: 1, name: 'actual' }],
  logs: 'case logs',
  latencyMs: 88,
};
