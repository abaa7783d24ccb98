import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import path from 'node:path';
import type { CaseRawResult } from '../src/db/case-result-repository';

/**
 * The container phase's record on the worker's local disk, from the moment the agent finished
 * until Postgres holds it (issue 13 item 2).
 *
 * Why a spool, and not keeping the exited container or putting the output in Temporal: the agent's
 * output comes from `docker exec`, not from the container, so an exited container cannot give it
 * back; and outputs, logs and trajectories stay out of Temporal payloads (ARCHITECTURE §1; they may
 * be large and may carry what the agent saw). The record is written here before the container is
 * removed and before the first Postgres write, so neither a Docker error on removal, nor a Postgres
 * outage longer than the persist step waits out, nor a worker killed in between re-runs the agent:
 * the next attempt on this host reads the spool instead of starting a container. (An attempt on
 * another host cannot see it; the persist step's wait makes that the rare case.)
 */
export interface CaseResultSpool {
  write(workflowId: string, runCaseId: number, raw: CaseRawResult): Promise<void>;
  read(workflowId: string, runCaseId: number): Promise<CaseRawResult | null>;
  discard(workflowId: string, runCaseId: number): Promise<void>;
}

/** One JSON file per case under `dir`, written atomically (temp file + rename). */
export class FileCaseResultSpool implements CaseResultSpool {
  constructor(private readonly dir: string) {}

  private file(workflowId: string, runCaseId: number): string {
    // Workflow ids are ours, but a file name must not depend on what characters they hold.
    const key = createHash('sha256').update(`${workflowId}\n${runCaseId}`).digest('hex').slice(0, 32);
    return path.join(this.dir, `${key}.json`);
  }

  async write(workflowId: string, runCaseId: number, raw: CaseRawResult): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const file = this.file(workflowId, runCaseId);
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify({ workflowId, runCaseId, raw }), { mode: 0o600 });
    await rename(tmp, file);
  }

  async read(workflowId: string, runCaseId: number): Promise<CaseRawResult | null> {
    let text: string;
    try {
      text = await readFile(this.file(workflowId, runCaseId), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    const entry = JSON.parse(text) as { workflowId: string; runCaseId: number; raw: CaseRawResult };
    // A hash collision is astronomically unlikely; checking costs nothing.
    return entry.workflowId === workflowId && entry.runCaseId === runCaseId ? entry.raw : null;
  }

  async discard(workflowId: string, runCaseId: number): Promise<void> {
    await rm(this.file(workflowId, runCaseId), { force: true });
  }
}
