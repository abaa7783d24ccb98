import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import path from 'node:path';
import type { CaseRawResult } from '../src/db/case-result-repository';

/**
 * The container phase's record on the worker's local disk, from the moment the agent's case
 * command returned until Postgres holds it (issue 13 item 2).
 *
 * Why a spool, and not keeping the exited container or putting the output in Temporal: the agent's
 * output comes from `docker exec`, not from the container, so an exited container cannot give it
 * back; and outputs, logs and trajectories stay out of Temporal payloads (ARCHITECTURE §1; they may
 * be large and may carry what the agent saw). The record is written the moment the case command
 * returns — before the after command, the log read, the container's removal and the first Postgres
 * write — so neither a Docker error, nor a Postgres outage longer than the persist step waits out,
 * nor a worker killed in between re-runs the agent: the next attempt on this host reads the spool
 * instead of starting a container. (An attempt on another host cannot see it; the persist step's
 * wait makes that the rare case.)
 */
export interface CaseResultSpool {
  write(workflowId: string, runCaseId: number, record: SpooledRecord): Promise<void>;
  read(workflowId: string, runCaseId: number): Promise<SpooledRecord | null>;
  discard(workflowId: string, runCaseId: number): Promise<void>;
  /** Every entry older than `minAgeMs` (by its last write), for the sweep (case-result-spool-sweep.ts). */
  entriesOlderThan(minAgeMs: number): Promise<SpooledEntry[]>;
}

export interface SpooledRecord {
  raw: CaseRawResult;
  /**
   * false while the after command is still to run: the case command's output is kept, but a retry
   * that finds this entry cannot run the after command again in the same container.
   */
  complete: boolean;
}

export interface SpooledEntry {
  workflowId: string;
  runCaseId: number;
  ageMs: number;
}

interface SpoolFile extends SpooledRecord {
  workflowId: string;
  runCaseId: number;
  deploymentId: string;
}

/**
 * One JSON file per case under `<root>/<deployment id>/`, written atomically (temp file + rename).
 * Scoped by deployment: two deployments sharing a host (and the case files' directory) never read,
 * sweep or discard each other's entries.
 */
export class FileCaseResultSpool implements CaseResultSpool {
  private readonly dir: string;

  constructor(
    root: string,
    private readonly deploymentId: string,
  ) {
    this.dir = path.join(root, deploymentId);
  }

  private file(workflowId: string, runCaseId: number): string {
    // Workflow ids are ours, but a file name must not depend on what characters they hold.
    const key = createHash('sha256').update(`${workflowId}\n${runCaseId}`).digest('hex').slice(0, 32);
    return path.join(this.dir, `${key}.json`);
  }

  async write(workflowId: string, runCaseId: number, record: SpooledRecord): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const file = this.file(workflowId, runCaseId);
    const tmp = `${file}.${process.pid}.tmp`;
    const entry: SpoolFile = { workflowId, runCaseId, deploymentId: this.deploymentId, ...record };
    await writeFile(tmp, JSON.stringify(entry), { mode: 0o600 });
    await rename(tmp, file);
  }

  async read(workflowId: string, runCaseId: number): Promise<SpooledRecord | null> {
    const entry = await this.load(this.file(workflowId, runCaseId));
    // A hash collision is astronomically unlikely; checking costs nothing.
    if (!entry || entry.workflowId !== workflowId || entry.runCaseId !== runCaseId) return null;
    return { raw: entry.raw, complete: entry.complete !== false };
  }

  async discard(workflowId: string, runCaseId: number): Promise<void> {
    await rm(this.file(workflowId, runCaseId), { force: true });
  }

  async entriesOlderThan(minAgeMs: number): Promise<SpooledEntry[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const now = Date.now();
    const entries: SpooledEntry[] = [];
    for (const name of names) {
      const file = path.join(this.dir, name);
      const info = await stat(file).catch(() => null);
      if (!info || now - info.mtimeMs < minAgeMs) continue;
      if (name.endsWith('.tmp')) {
        // A write cut by a kill: never renamed, so nobody can read it; safe to drop once old.
        await rm(file, { force: true });
        continue;
      }
      const entry = await this.load(file).catch(() => null);
      if (entry && entry.deploymentId === this.deploymentId)
        entries.push({ workflowId: entry.workflowId, runCaseId: entry.runCaseId, ageMs: now - info.mtimeMs });
    }
    return entries;
  }

  private async load(file: string): Promise<SpoolFile | null> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    return JSON.parse(text) as SpoolFile;
  }
}
