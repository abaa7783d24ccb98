import { upsertSearchAttributes } from '@temporalio/workflow';
import { finishedCount, type RunProgress } from '../src/domain/experiment-run';
import { SA } from '../src/domain/search-attributes';

/** Runs upsert progress at most this often (plus once at the end). */
const PROGRESS_UPSERT_MIN_INTERVAL_MS = 5_000;

/** Upserts the run's `CasesDone`/`CasesFailed` search attributes (a visibility write on the server). */
export function publishProgress(p: RunProgress): void {
  upsertSearchAttributes([
    { key: SA.casesDone, value: finishedCount(p) },
    { key: SA.casesFailed, value: p.failed + p.timeout },
  ]);
}

/**
 * Decides which case outcomes are followed by a progress upsert: every 5 % of the cases, at most
 * once per 5 s of workflow time, and at the end. Each upsert is a visibility write on the server:
 * on fast runs 20 of them cost ~5% of the throughput (bench/sandbox-overhead). The `progress`
 * query is always exact.
 */
export class ProgressPublisher {
  /** Workflow time (deterministic: the workflow task's start) of the last progress upsert. */
  private lastPublishedAt = Date.now();

  constructor(private readonly progress: RunProgress) {}

  /**
   * Called right after each single case outcome is recorded, in the same synchronous step: which
   * upserts are emitted must not depend on how many results one activation delivers (activity
   * results arrive one per activation live, but together on replay).
   */
  afterCaseOutcome(): void {
    const done = finishedCount(this.progress);
    const step = Math.max(1, Math.floor(this.progress.total / 20));
    if (done === this.progress.total) {
      publishProgress(this.progress);
    } else if (done % step === 0 && Date.now() - this.lastPublishedAt >= PROGRESS_UPSERT_MIN_INTERVAL_MS) {
      this.lastPublishedAt = Date.now();
      publishProgress(this.progress);
    }
  }
}
