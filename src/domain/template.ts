import registryJson from '../../contracts/template_variables.json';

/**
 * The platform's template-variable registry and the `{{ path }}` renderer (CONTRACT §6.4), shared
 * by runtime commands and evaluator prompts. Pure.
 */

export type TemplateErrorCode =
  | 'E_TEMPLATE_VARS_INVALID_VERSION'
  | 'E_TEMPLATE_VARS_INVALID_GROUPS'
  | 'E_TEMPLATE_VARS_INVALID_GROUP'
  | 'E_TEMPLATE_VARS_EMPTY_GROUP'
  | 'E_TEMPLATE_VARS_INVALID_VARIABLE'
  | 'E_TEMPLATE_VARS_MISSING_FIELDS'
  | 'E_TEMPLATE_VARS_GROUP_NOT_FOUND'
  | 'E_RUNTIME_COMMAND_TEMPLATE_VARIABLE_NOT_DECLARED'
  | 'E_TEMPLATE_VARIABLE_NOT_FOUND';

export class TemplateError extends Error {
  constructor(
    readonly code: TemplateErrorCode,
    detail: string,
  ) {
    super(`${code}: ${detail}`);
    this.name = 'TemplateError';
  }
}

interface TemplateVariable {
  path: string;
  description: string;
  example: string | undefined;
}

interface TemplateGroup {
  title: string;
  variables: readonly TemplateVariable[];
}

interface TemplateRegistry {
  version: number;
  groups: Readonly<Record<string, TemplateGroup>>;
}

type TemplateGroupName = 'agent_runtime_commands' | 'evaluator_prompt';

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function text(value: unknown): string {
  return value === undefined || value === null ? '' : String(value).trim();
}

/*
 * Hand-rolled rather than zod: each rule maps to its own contract error code, checked in the
 * same order as the platform and the original consumer.
 */
function validateGroup(name: string, raw: unknown): TemplateGroup {
  if (!isPlainObject(raw)) throw new TemplateError('E_TEMPLATE_VARS_INVALID_GROUP', name);
  const variablesRaw = raw.variables;
  if (!Array.isArray(variablesRaw) || variablesRaw.length === 0) {
    throw new TemplateError('E_TEMPLATE_VARS_EMPTY_GROUP', name);
  }
  const variables = variablesRaw.map((item: unknown, index): TemplateVariable => {
    if (!isPlainObject(item)) {
      throw new TemplateError('E_TEMPLATE_VARS_INVALID_VARIABLE', `group=${name} index=${index}`);
    }
    const path = text(item.path);
    const description = text(item.description);
    if (!path || !description) {
      throw new TemplateError('E_TEMPLATE_VARS_MISSING_FIELDS', `group=${name} index=${index}`);
    }
    return { path, description, example: text(item.example) || undefined };
  });
  return { title: text(raw.title) || name, variables };
}

export function validateTemplateRegistry(raw: unknown): TemplateRegistry {
  const root = isPlainObject(raw) ? raw : {};
  const version = root.version;
  if (typeof version !== 'number' || !Number.isInteger(version) || version <= 0) {
    throw new TemplateError('E_TEMPLATE_VARS_INVALID_VERSION', JSON.stringify(version) ?? 'missing');
  }
  if (!isPlainObject(root.groups)) throw new TemplateError('E_TEMPLATE_VARS_INVALID_GROUPS', 'groups');
  const groups: Record<string, TemplateGroup> = {};
  for (const [name, group] of Object.entries(root.groups)) groups[name] = validateGroup(name, group);
  return { version, groups };
}

export const templateRegistry: TemplateRegistry = validateTemplateRegistry(registryJson);

const declaredCache = new WeakMap<TemplateGroup, ReadonlySet<string>>();

export function declaredVariables(registry: TemplateRegistry, group: TemplateGroupName): ReadonlySet<string> {
  const found = Object.hasOwn(registry.groups, group) ? registry.groups[group] : undefined;
  if (!found) throw new TemplateError('E_TEMPLATE_VARS_GROUP_NOT_FOUND', group);
  let paths = declaredCache.get(found);
  if (!paths) {
    paths = new Set(found.variables.map((v) => v.path));
    declaredCache.set(found, paths);
  }
  return paths;
}

const PLACEHOLDER = /\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}/g;

function placeholderPaths(template: string): string[] {
  return Array.from(template.matchAll(PLACEHOLDER), (m) => m[1] ?? '');
}

function resolvePath(context: Record<string, unknown>, path: string): unknown {
  let current: unknown = context;
  for (const segment of path.split('.')) {
    if (!isPlainObject(current) || !Object.hasOwn(current, segment) || current[segment] === undefined) {
      throw new TemplateError('E_TEMPLATE_VARIABLE_NOT_FOUND', path);
    }
    current = current[segment];
  }
  return current;
}

/** Python's json.dumps(indent=2, ensure_ascii=False) has the same layout as JSON.stringify(v, null, 2). */
function formatValue(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value, null, 2);
}

function render(template: string, context: Record<string, unknown>): string {
  // A replacer function, not a string, so `$&`-style sequences in values are never interpreted.
  return template.replace(PLACEHOLDER, (_match, path: string) => formatValue(resolvePath(context, path)));
}

/**
 * Renders sandbox_start/case_exec/after_exec commands. Values are spliced in unquoted, as the
 * platform's agents expect (§6.2); every placeholder must be declared before anything renders.
 */
export function renderCommandTemplate(
  template: string,
  context: Record<string, unknown>,
  registry: TemplateRegistry = templateRegistry,
): string {
  const trimmed = template.trim();
  if (!trimmed) return '';
  const declared = declaredVariables(registry, 'agent_runtime_commands');
  for (const path of placeholderPaths(trimmed)) {
    if (!declared.has(path))
      throw new TemplateError('E_RUNTIME_COMMAND_TEMPLATE_VARIABLE_NOT_DECLARED', path);
  }
  return render(trimmed, context).trim();
}

/** Evaluator prompts: only resolution errors apply, no declared-variable check (§6.4). */
export function renderEvaluatorPrompt(template: string, context: Record<string, unknown>): string {
  return render(template, context);
}

export interface CommandContextInput {
  experimentId: number;
  datasetId: number;
  datasetName: string;
  agentId: number;
  agentName: string;
  agentKey: string;
  agentVersion: string;
  runCase: {
    runCaseId: number;
    dataItemId: number;
    attemptNo: number;
    userInput: string;
    sessionJsonl: string;
    traceId: string | null;
  };
  mockBaseUrl: string;
}

type CommandContext = {
  experiment: { id: number };
  dataset: { id: number; name: string };
  agent: { id: number; name: string; agent_key: string; version: string };
  run_case: {
    run_case_id: number;
    data_item_id: number;
    attempt_no: number;
    user_input: string;
    session_jsonl: string;
    trace_id: string;
  };
  mock: { base_url: string };
};

/** The agent_runtime_commands variables of §6.4, keyed the way the registry names them. */
export function buildCommandContext(input: CommandContextInput): CommandContext {
  const { runCase } = input;
  return {
    experiment: { id: input.experimentId },
    dataset: { id: input.datasetId, name: input.datasetName },
    agent: {
      id: input.agentId,
      name: input.agentName,
      agent_key: input.agentKey,
      version: input.agentVersion,
    },
    run_case: {
      run_case_id: runCase.runCaseId,
      data_item_id: runCase.dataItemId,
      attempt_no: runCase.attemptNo,
      user_input: runCase.userInput,
      session_jsonl: runCase.sessionJsonl,
      trace_id: runCase.traceId ?? '',
    },
    mock: { base_url: input.mockBaseUrl },
  };
}
