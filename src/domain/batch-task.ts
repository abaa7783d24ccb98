import { z } from 'zod';

/**
 * One task of a batch file (`tasks.jsonl`, one JSON object a line), the format of the agent-data
 * platform we replace: `{task_id, task_type, description, expected_tools, max_steps, timeout,
 * constraints}`. Pure: parsing a file's text never touches the file system, so a bad line is
 * reported with its number and nothing else is lost.
 */

export const TASK_TYPES = ['code', 'web', 'reasoning'] as const;
export type TaskType = (typeof TASK_TYPES)[number];

/** Task ids name files (`<out>/trajectories/<task_id>.json`): no separators, no dot files. */
const TASK_ID = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

export const DEFAULT_MAX_STEPS = 10;
export const DEFAULT_TASK_TIMEOUT_SECONDS = 60;
/** A task's own timeout may not exceed this (the container phase's budget is derived from it). */
const MAX_TASK_TIMEOUT_SECONDS = 3600;

export const batchTaskSchema = z.object({
  task_id: z
    .union([z.string(), z.number().int()])
    .transform(String)
    .refine(
      (id) => TASK_ID.test(id),
      'task_id: 1-128 letters, digits, "_", "-" or "." (not starting with "." or "-")',
    ),
  task_type: z.enum(TASK_TYPES),
  description: z.string().max(100_000),
  expected_tools: z.array(z.string().min(1)).default([]),
  max_steps: z.number().int().positive().max(1000).default(DEFAULT_MAX_STEPS),
  timeout: z.number().positive().max(MAX_TASK_TIMEOUT_SECONDS).default(DEFAULT_TASK_TIMEOUT_SECONDS),
  constraints: z.record(z.string(), z.unknown()).default({}),
});
export type BatchTask = z.output<typeof batchTaskSchema>;

export interface TaskLineError {
  /** 1-based line number in the file. */
  line: number;
  message: string;
}

interface ParsedTaskFile {
  tasks: Array<BatchTask & { line: number }>;
  errors: TaskLineError[];
}

// Split on \n only: a task's JSON may not contain a raw line break, and \r of CRLF files is trimmed.
export function parseTaskLines(text: string): ParsedTaskFile {
  const tasks: ParsedTaskFile['tasks'] = [];
  const errors: TaskLineError[] = [];
  const seen = new Map<string, number>();
  text.split('\n').forEach((raw, index) => {
    const line = index + 1;
    const trimmed = raw.trim();
    if (trimmed === '') return;
    let value: unknown;
    try {
      value = JSON.parse(trimmed);
    } catch (err) {
      errors.push({ line, message: `not JSON: ${err instanceof Error ? err.message : String(err)}` });
      return;
    }
    const parsed = batchTaskSchema.safeParse(value);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const path = issue?.path.join('.') || '(line)';
      errors.push({ line, message: `${path}: ${issue?.message ?? 'invalid'}` });
      return;
    }
    const first = seen.get(parsed.data.task_id);
    if (first !== undefined) {
      errors.push({ line, message: `task_id "${parsed.data.task_id}" repeats the task of line ${first}` });
      return;
    }
    seen.set(parsed.data.task_id, line);
    tasks.push({ ...parsed.data, line });
  });
  return { tasks, errors };
}
