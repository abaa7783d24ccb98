import { z } from 'zod';
import { CASE_STATUSES } from '../domain/case-status';
import { RUN_STATUSES } from '../domain/run-status';
import { experimentFileSchema } from '../local-run/experiment-file';

/**
 * Request and response shapes of the HTTP API. They validate every request (400 with a field path
 * otherwise) and are what /openapi.json is generated from, so the document cannot drift.
 */

const existingExperimentBody = z
  .object({
    experiment_id: z
      .number()
      .int()
      .positive()
      .meta({ description: 'experiments.id of an experiment in the platform tables.' }),
  })
  .strict()
  .meta({
    id: 'ExistingExperimentRun',
    description:
      "Run an experiment that exists in the platform's tables, as the platform's Run button does: only from idle or manual_terminated; every data item gets a new attempt.",
  });

/** `triggered_by` optional here: without it the token's name is recorded (`api:<name>`). */
const experimentFileBody = experimentFileSchema
  .extend({ triggered_by: z.string().min(1).max(200).optional() })
  .meta({
    id: 'ExperimentFile',
    description:
      'An experiment file as `benchctl run` takes it (examples/sample-experiment.json): the platform rows (agent, dataset, items, evaluators, experiment, run cases) are created first.',
  });

export const runRequestBody = z.union([existingExperimentBody, experimentFileBody]);

export const runIdParams = z.object({
  run_id: z
    .string()
    .min(1)
    .max(300)
    .regex(/^[A-Za-z0-9._:-]+$/, 'letters, digits and . _ : -')
    .meta({ description: 'The run id (the Temporal workflow id).' }),
});

export const experimentIdParams = z.object({
  experiment_id: z.coerce.number().int().positive().meta({ description: 'experiments.id' }),
});

export const idempotencyHeaders = z.object({
  'idempotency-key': z
    .string()
    .regex(/^[\x21-\x7e]{1,255}$/, '1-255 printable ASCII characters')
    .optional()
    .meta({
      description:
        'The same key and body return the same run (never a second one); the same key with another body is answered 409. Keys are scoped by token and kept 7 days.',
    }),
});

const links = z.object({
  self: z.string(),
  cases: z.string(),
  events: z.string(),
  cancel: z.string(),
  temporal_ui: z.string(),
});

const caseCounts = z.object({
  total: z.number().int(),
  pending: z.number().int(),
  queued: z.number().int(),
  running: z.number().int(),
  trajectory: z.number().int(),
  scoring: z.number().int(),
  success: z.number().int(),
  failed: z.number().int(),
  timeout: z.number().int(),
  canceled: z.number().int(),
});

const runStatusSchema = z.enum(RUN_STATUSES).meta({
  description:
    'queued: no case started yet; running; done: finished (some cases may have failed); failed: no case succeeded, or the run could not start; canceled.',
});

export const runAccepted = z
  .object({
    run_id: z.string(),
    workflow_id: z.string(),
    experiment_id: z.number().int(),
    status: runStatusSchema,
    links,
  })
  .meta({ id: 'RunAccepted' });

export const runSchema = z
  .object({
    run_id: z.string(),
    workflow_id: z.string(),
    experiment_id: z.number().int(),
    status: runStatusSchema,
    workflow_status: z.string().nullable().meta({
      description:
        'Temporal execution status (RUNNING, COMPLETED, CANCELLED, …); null if Temporal does not know the run.',
    }),
    cases: caseCounts,
    created_at: z.string().meta({ description: 'When the run was submitted.' }),
    started_at: z.string().nullable().meta({ description: 'When its first case started.' }),
    finished_at: z.string().nullable().meta({ description: 'When its workflow closed.' }),
    links,
  })
  .meta({ id: 'Run' });

export const runListQuery = z.object({
  experiment_id: z.coerce.number().int().positive().optional(),
  limit: z.coerce.number().int().min(1).max(100).default(20),
  cursor: z.string().max(500).optional().meta({ description: 'next_cursor of the previous page.' }),
});

export const runList = z
  .object({ items: z.array(runSchema), next_cursor: z.string().nullable() })
  .meta({ id: 'RunList' });

export const caseListQuery = z.object({
  status: z
    .string()
    .max(200)
    .optional()
    .meta({ description: `Comma-separated case statuses to keep (${CASE_STATUSES.join(', ')}).` }),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  cursor: z
    .string()
    .regex(/^\d{1,10}$/, 'the next_cursor of the previous page')
    .optional(),
});

const caseSchema = z
  .object({
    run_case_id: z.number().int(),
    data_item_id: z.number().int(),
    attempt_no: z.number().int(),
    status: z.enum(CASE_STATUSES),
    output: z.unknown().meta({ description: 'run_cases.agent_output (any JSON).' }),
    error_code: z.string().nullable(),
    error_message: z.string().nullable(),
    final_score: z.number().nullable(),
    latency_ms: z.number().int().nullable(),
    started_at: z.string().nullable(),
    finished_at: z.string().nullable(),
    scores: z.array(z.object({ scorer_key: z.string(), score: z.number(), reason: z.string() })),
  })
  .meta({ id: 'RunCase' });

export const caseList = z
  .object({ items: z.array(caseSchema), next_cursor: z.string().nullable() })
  .meta({ id: 'RunCaseList' });

export const cancelAccepted = z
  .object({
    run_id: z.string(),
    cancel: z.enum(['requested', 'not_running']).meta({
      description:
        'requested: the run is being canceled (its containers stop, remaining cases become canceled); not_running: it had ended already.',
    }),
    status: runStatusSchema,
    links,
  })
  .meta({ id: 'CancelAccepted' });

export const retryAccepted = runAccepted
  .extend({ retried_cases: z.number().int().meta({ description: 'Failed cases that got a new attempt.' }) })
  .meta({ id: 'RetryAccepted' });

export const health = z.object({ status: z.literal('ok') });

export const readiness = z
  .object({
    status: z.enum(['starting', 'ready', 'not_ready', 'stopping']),
    checks: z.record(
      z.string(),
      z.object({
        ok: z.boolean(),
        error: z.string().optional().meta({ description: 'The failure, one line.' }),
      }),
    ),
  })
  .meta({ id: 'Readiness', description: 'The checks of Postgres and Temporal (each cut at 3 s).' });
