import { deprecatePatch } from '@temporalio/workflow';
import type { CaseCursorEntry } from '../src/domain/activity-contract';
import type { ExperimentRunInput, ExperimentRunResult, RunProgress } from '../src/domain/experiment-run';
import { bookkeeping } from './activity-proxies';
import { publishProgress } from './progress-publisher';

/** Cases read per `listCasePage` (and returned with prepareRun as the first page). */
export const CASE_PAGE_SIZE = 200;

/** How a fresh run's start ended: the run is over already, or its cases may start. */
type RunStart = { ended: ExperimentRunResult } | { firstPage: CaseCursorEntry[] | undefined };

/**
 * The start of a fresh run (continued runs have none): the platform's skip rules, the runtime
 * spec and the image (prepareRun), and the first page of cases with the same activity.
 */
export async function startRun(
  input: ExperimentRunInput,
  workflowId: string,
  progress: RunProgress,
): Promise<RunStart> {
  deprecatePatch('first-page-in-prepare');
  const prep = await bookkeeping.prepareRun({
    workflowId,
    experimentId: input.experimentId,
    messageId: input.messageId,
    firstPageLimit: CASE_PAGE_SIZE,
  });
  if (prep.skip) {
    return { ended: { outcome: prep.skip, progress, detail: prep.detail } };
  }
  if (prep.failure) {
    // The whole run could not start (bad runtime spec, image unavailable): every case was
    // recorded failed with the reason, as the original's whole-batch failure does (§6.7).
    progress.failed = progress.total;
    publishProgress(progress);
    return { ended: { outcome: 'failed_before_start', progress, detail: prep.failure } };
  }
  // No page from a prepareRun that predates firstPageLimit (the v3 histories recorded one): then
  // listCasePage reads it.
  return { firstPage: prep.firstPage };
}
