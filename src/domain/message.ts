import { z } from 'zod';
import { errorText } from './errors';

/**
 * The v2 `experiment.run.requested` message (CONTRACT §2). Pure: the bridge validates with it and
 * workflows receive the parsed shape.
 *
 * Unknown keys are kept everywhere (the Python parser crashed on extras, §13.17); the fields we
 * read are strict. Ids arrive as JSON strings from the platform's `pg` reads (§2.1), so every id
 * accepts a number or a decimal string and comes out as a positive safe integer.
 */

const EXPERIMENT_RUN_REQUESTED = 'experiment.run.requested';
const SUPPORTED_SCHEMA_VERSION = 'v2';

export type MessageErrorCode =
  | 'E_MESSAGE_INVALID_JSON'
  | 'E_MESSAGE_TOO_DEEP'
  | 'E_UNSUPPORTED_MESSAGE_TYPE'
  | 'E_UNSUPPORTED_SCHEMA_VERSION'
  | 'E_MESSAGE_SCHEMA_INVALID';

export type ParseMessageResult =
  { ok: true; message: ExperimentRunRequested } | { ok: false; code: MessageErrorCode; error: string };

const DECIMAL_INTEGER = /^[0-9]+$/;

function describeValue(value: unknown): string {
  if (value === undefined) return '(missing)';
  return JSON.stringify(value) ?? String(value);
}

function toPositiveInteger(value: unknown): number | undefined {
  const n =
    typeof value === 'number'
      ? value
      : typeof value === 'string' && DECIMAL_INTEGER.test(value)
        ? Number(value)
        : NaN;
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

const positiveId = z
  .unknown()
  .optional()
  .transform((value, ctx) => {
    const id = toPositiveInteger(value);
    if (id !== undefined) return id;
    ctx.addIssue({
      code: 'custom',
      message:
        value === undefined
          ? 'required'
          : `expected a positive integer (JSON number or decimal string), got ${describeValue(value)}`,
    });
    return z.NEVER;
  });

/** Scorer ids may be absent or 0 (Python `int(id or 0)`); 0 means "no evaluators row" (§3.5). */
const scorerId = z
  .unknown()
  .optional()
  .transform((value, ctx) => {
    if (value === undefined || value === null || value === 0 || value === '0') return 0;
    const id = toPositiveInteger(value);
    if (id !== undefined) return id;
    ctx.addIssue({
      code: 'custom',
      message: `expected a non-negative integer (JSON number or decimal string), got ${describeValue(value)}`,
    });
    return z.NEVER;
  });

const jsonObject = z.record(z.string(), z.unknown());

// ---------------------------------------------------------------------------------------------
// mock_config (§2.5): parsed tolerantly, the way the Python parser does — malformed rules are
// dropped, never rejected, because a bad rule must not cost the whole message.

export type MockResponseType = 'json' | 'text' | 'python';

export interface MockMatch {
  /** Upper-cased; empty means any method. */
  methods: string[];
  url?: string;
  url_regex?: string;
  host?: string;
  path?: string;
  path_regex?: string;
}

export interface MockResponse {
  type: MockResponseType;
  status: number;
  headers: Record<string, string>;
  json: unknown;
  text: string;
  python_code: string;
}

export interface MockRule {
  name: string;
  match: MockMatch;
  response: MockResponse;
}

export interface MockConfig {
  passthrough: boolean;
  rules: MockRule[];
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Python's truthiness, because the original reads these fields with `x or default`. */
function isTruthy(value: unknown): boolean {
  if (Array.isArray(value)) return value.length > 0;
  if (isPlainObject(value)) return Object.keys(value).length > 0;
  return Boolean(value);
}

function looseText(value: unknown): string {
  if (typeof value === 'string') return value;
  return JSON.stringify(value) ?? String(value);
}

function optionalCriterion(value: unknown): string | undefined {
  return isTruthy(value) ? looseText(value) : undefined;
}

const MOCK_RESPONSE_TYPES: readonly string[] = ['json', 'text', 'python'];
const MIN_HTTP_STATUS = 100;
const DEFAULT_MOCK_STATUS = 200;

function parseMockStatus(value: unknown): number {
  const n = typeof value === 'string' ? Number(value.trim()) : typeof value === 'number' ? value : NaN;
  if (!Number.isFinite(n) || Math.trunc(n) === 0) return DEFAULT_MOCK_STATUS;
  return Math.max(MIN_HTTP_STATUS, Math.trunc(n));
}

function parseMockRule(raw: unknown): MockRule | null {
  if (!isPlainObject(raw)) return null;
  const match = isTruthy(raw.match) ? raw.match : {};
  const response = isTruthy(raw.response) ? raw.response : {};
  if (!isPlainObject(match) || !isPlainObject(response)) return null;

  const methods = Array.isArray(match.methods)
    ? match.methods
        .map(looseText)
        .filter((m) => m.trim() !== '')
        .map((m) => m.toUpperCase())
    : [];
  const criteria: MockMatch = { methods };
  for (const key of ['url', 'url_regex', 'host', 'path', 'path_regex'] as const) {
    const criterion = optionalCriterion(match[key]);
    if (criterion !== undefined) criteria[key] = criterion;
  }

  const type = typeof response.type === 'string' ? response.type.trim().toLowerCase() : '';
  const headers: Record<string, string> = {};
  if (isPlainObject(response.headers)) {
    for (const [k, v] of Object.entries(response.headers)) headers[k] = looseText(v);
  }
  return {
    name: isTruthy(raw.name) ? looseText(raw.name) : '',
    match: criteria,
    response: {
      type: MOCK_RESPONSE_TYPES.includes(type) ? (type as MockResponseType) : 'json',
      status: parseMockStatus(response.status),
      headers,
      json: response.json ?? null,
      text: isTruthy(response.text) ? looseText(response.text) : '',
      python_code: isTruthy(response.python_code) ? looseText(response.python_code) : '',
    },
  };
}

/** Tolerant §2.5 parse: a non-object config is "no config"; malformed rules are skipped. */
export function parseMockConfig(raw: unknown): MockConfig | null {
  if (!isPlainObject(raw)) return null;
  const rules = Array.isArray(raw.rules) ? raw.rules.map(parseMockRule).filter((r) => r !== null) : [];
  return {
    passthrough: raw.passthrough === undefined ? true : isTruthy(raw.passthrough),
    rules,
  };
}

// ---------------------------------------------------------------------------------------------
// scorers (§2.4)

const rawScorerSchema = z.looseObject({
  id: scorerId,
  scorer_key: z.string().nullish(),
  evaluator_key: z.string().nullish(),
  name: z.string().nullish(),
  scorer_config: jsonObject.nullish().transform((v) => v ?? {}),
});

/** §7.1: `scorer_key`, then `evaluator_key`, then `default_<idx>`; blank counts as absent. */
export function resolveScorerKey(
  scorer: { scorer_key?: string | null; evaluator_key?: string | null },
  index: number,
): string {
  return scorer.scorer_key?.trim() || scorer.evaluator_key?.trim() || `default_${index}`;
}

const scorersSchema = z
  .array(rawScorerSchema)
  .nullish()
  .transform((list) =>
    (list ?? []).map((scorer, index) => {
      const scorer_key = resolveScorerKey(scorer, index);
      // §7.4: the display name falls back to the key.
      return { ...scorer, scorer_key, name: scorer.name?.trim() || scorer_key };
    }),
  );

// ---------------------------------------------------------------------------------------------
// run cases (§2.2)

const runCaseSchema = z.looseObject({
  run_case_id: positiveId,
  data_item_id: positiveId,
  attempt_no: positiveId,
  session_jsonl: z.string(),
  user_input: z.string(),
  reference_output: z.unknown().default({}),
  trace_id: z.string().nullable().default(null),
  reference_trajectory: z.unknown().default(null),
  mock_config: z.unknown().optional().transform(parseMockConfig),
});

const runCasesSchema = z
  .array(runCaseSchema)
  .nullish()
  .transform((list) => list ?? [])
  .superRefine((cases, ctx) => {
    const seen = new Set<number>();
    cases.forEach((c, index) => {
      if (seen.has(c.run_case_id)) {
        ctx.addIssue({
          code: 'custom',
          path: [index, 'run_case_id'],
          message: `duplicate run_case_id ${c.run_case_id}`,
        });
      }
      seen.add(c.run_case_id);
    });
  });

// ---------------------------------------------------------------------------------------------

export const experimentRunRequestedSchema = z.looseObject({
  message_type: z.literal(EXPERIMENT_RUN_REQUESTED),
  schema_version: z.literal(SUPPORTED_SCHEMA_VERSION).default(SUPPORTED_SCHEMA_VERSION),
  message_id: z
    .string()
    .nullish()
    .transform((v) => v ?? ''),
  experiment: z.looseObject({ id: positiveId, triggered_by: z.string() }),
  dataset: z.looseObject({ id: positiveId, name: z.string() }),
  agent: z.looseObject({
    id: positiveId,
    name: z.string(),
    agent_key: z.string(),
    version: z.string(),
    // Validated separately (runtime-spec.ts) so a bad spec fails the cases, not the message (§6.7).
    runtime_spec_json: jsonObject.nullish().transform((v) => v ?? {}),
  }),
  scorers: scorersSchema,
  run_cases: runCasesSchema,
  consumer_hints: jsonObject.nullish().transform((v) => v ?? {}),
});

export type ExperimentRunRequested = z.output<typeof experimentRunRequestedSchema>;
export type RunCaseInput = ExperimentRunRequested['run_cases'][number];

function decodeBody(body: string | Uint8Array): string {
  return typeof body === 'string' ? body : new TextDecoder('utf-8', { fatal: true }).decode(body);
}

/**
 * Messages nest a few levels (mock rules, runtime specs); anything deeper is hostile or broken. Refused
 * before JSON.parse: a deep value parses, but every later recursive walk over it (validation, the
 * Temporal payload converter, logging) can overflow the stack, and such a start fails on every delivery.
 */
const MAX_MESSAGE_JSON_DEPTH = 200;

/** The first nesting depth above `max` of JSON text, or null; one pass, no allocation, ignores strings. */
export function jsonDepthAbove(text: string, max: number): number | null {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) return depth;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return null;
}

function fail(code: MessageErrorCode, detail: string): ParseMessageResult {
  return { ok: false, code, error: `${code}: ${detail}` };
}

function describeField(value: unknown): string {
  return typeof value === 'string' ? value : describeValue(value);
}

/** §2.1 order: JSON → message_type → schema_version → schema. Never throws. */
export function parseExperimentMessage(body: string | Uint8Array): ParseMessageResult {
  let payload: unknown;
  try {
    const text = decodeBody(body);
    if (jsonDepthAbove(text, MAX_MESSAGE_JSON_DEPTH) !== null)
      return fail('E_MESSAGE_TOO_DEEP', `JSON nested deeper than ${MAX_MESSAGE_JSON_DEPTH} levels`);
    payload = JSON.parse(text);
  } catch (err) {
    return fail('E_MESSAGE_INVALID_JSON', errorText(err));
  }
  if (!isPlainObject(payload)) {
    const got = payload === null ? 'null' : Array.isArray(payload) ? 'array' : typeof payload;
    return fail('E_MESSAGE_SCHEMA_INVALID', `(root): expected a JSON object, got ${got}`);
  }
  if (payload.message_type !== EXPERIMENT_RUN_REQUESTED) {
    return fail('E_UNSUPPORTED_MESSAGE_TYPE', describeField(payload.message_type));
  }
  if (payload.schema_version !== undefined && payload.schema_version !== SUPPORTED_SCHEMA_VERSION) {
    return fail('E_UNSUPPORTED_SCHEMA_VERSION', describeField(payload.schema_version));
  }
  const parsed = experimentRunRequestedSchema.safeParse(payload);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const path = issue && issue.path.length > 0 ? issue.path.map(String).join('.') : '(root)';
    return fail('E_MESSAGE_SCHEMA_INVALID', `${path}: ${issue?.message ?? 'invalid'}`);
  }
  return { ok: true, message: parsed.data };
}
