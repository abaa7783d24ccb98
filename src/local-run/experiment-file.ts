import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { errorText } from '../domain/errors';

/**
 * The file `benchctl run` takes: what the platform would hold in its tables for one experiment —
 * a dataset with items, an agent with its runtime spec, and optionally evaluators.
 */
export const experimentFileSchema = z.object({
  name: z.string().min(1).default('local experiment'),
  triggered_by: z.string().default('benchctl'),
  dataset: z.object({
    name: z.string().min(1),
    items: z
      .array(
        z.object({
          user_input: z.string(),
          session_jsonl: z.string().default('[]'),
          reference_output: z.unknown().default({}),
          mock_config: z.record(z.string(), z.unknown()).nullable().default(null),
        }),
      )
      .min(1, 'a dataset needs at least one item'),
  }),
  agent: z.object({
    name: z.string().min(1),
    agent_key: z.string().min(1),
    version: z.string().min(1).default('v1'),
    runtime_spec_json: z.record(z.string(), z.unknown()),
  }),
  evaluators: z
    .array(
      z.object({
        evaluator_key: z.string().min(1),
        name: z.string().min(1),
        prompt_template: z.string(),
        base_url: z.string().optional(),
        model_name: z.string().optional(),
        api_style: z.string().optional(),
        api_key: z.string().optional(),
      }),
    )
    .default([]),
});
export type ExperimentFile = z.output<typeof experimentFileSchema>;

export class ExperimentFileError extends Error {
  override name = 'ExperimentFileError';
}

export async function readExperimentFile(file: string): Promise<ExperimentFile> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new ExperimentFileError(`${file}: ${errorText(err)}`);
  }
  const parsed = experimentFileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ExperimentFileError(
      `${file}: ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`,
    );
  }
  return parsed.data;
}
