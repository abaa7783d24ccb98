import type { JudgedCaseInput } from './judge-score';

/**
 * What the scorers of a case are given, however the case is scored (its run's score phase, or
 * `benchctl rescore` later): the scorer list built from the platform's evaluator rows the way its
 * message carries it (CONTRACT §2.4), and the data item as the judge prompt sees it (§7.3). Pure.
 */

/** One `evaluators` row linked to an experiment, api_key included (never logged or stored by us). */
export interface EvaluatorRow {
  id: number;
  evaluator_key: string;
  name: string;
  prompt_template: string;
  base_url: string;
  model_name: string;
  api_style: string;
  api_key: string;
}

/** One entry of the message's `scorers` (§2.4), with the real api_key filled in. */
export interface ScorerDefinition {
  id: number;
  scorer_key: string;
  name: string;
  scorer_config: Record<string, unknown>;
}

/** §2.4: the scorer the platform's message lists for an evaluator; §7.4: the name falls back to the key. */
export function scorerFromEvaluator(e: EvaluatorRow): ScorerDefinition {
  return {
    id: e.id,
    scorer_key: e.evaluator_key,
    name: e.name.trim() || e.evaluator_key,
    scorer_config: {
      prompt_template: e.prompt_template,
      base_url: e.base_url,
      model_name: e.model_name,
      api_style: e.api_style,
      api_key: e.api_key,
    },
  };
}

/**
 * The data item fields of a case as a message carries them (§2.2). The platform's data_items has
 * no trace_id or reference_trajectory column (§12.15): a case read from its rows has neither.
 */
interface CaseDataItem {
  data_item_id: number;
  user_input: string;
  session_jsonl: string;
  reference_output: unknown;
  reference_trajectory?: unknown;
  trace_id?: string | null;
}

/** The `data_item` of the judge prompt's context (§7.3). */
export function judgedCaseInput(c: CaseDataItem): JudgedCaseInput {
  return {
    dataItemId: c.data_item_id,
    userInput: c.user_input,
    sessionJsonl: c.session_jsonl,
    referenceTrajectory: c.reference_trajectory ?? null,
    referenceOutput: c.reference_output,
    traceId: c.trace_id ?? null,
  };
}
