import { chmod, mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Where a case container finds the files we give it (case.json, the mock gateway's CA). */
export const CASE_FILES_ROOT = '/benchmark';

const MOUNTABLE = new RegExp(`^${CASE_FILES_ROOT}/[a-zA-Z0-9_][a-zA-Z0-9_.-]*$`);

export interface CaseFile {
  /** Absolute path inside the container. */
  path: string;
  content: string;
  mode?: number;
}

/**
 * One host directory per case container, bind-mounted read-only at /benchmark. Writing a file here
 * costs well under a millisecond, where `putArchive` costs ~45 ms per container on Docker 20.10
 * (the daemon mounts the container's rootfs and re-executes itself to untar); see
 * bench/sandbox-overhead.ts. Only usable when the daemon sees the worker's filesystem, which
 * DockerSandbox finds out on first use.
 */
export class CaseFileDirectory {
  constructor(readonly root: string) {}

  /** True for a file directly in /benchmark (what one mount of this directory can carry). */
  static mountable(path: string): boolean {
    return MOUNTABLE.test(path);
  }

  /** Replaces the directory of `containerName` with `files`; returns its host path. */
  async write(containerName: string, files: readonly CaseFile[]): Promise<string> {
    const dir = this.dirOf(containerName);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    // Readable by whatever user the image runs as (mkdir honours the umask, so set it explicitly).
    await chmod(dir, 0o755);
    for (const file of files) {
      if (!CaseFileDirectory.mountable(file.path))
        throw new Error(`not a file directly in ${CASE_FILES_ROOT}: ${file.path}`);
      const target = join(dir, file.path.slice(CASE_FILES_ROOT.length + 1));
      await writeFile(target, file.content);
      await chmod(target, file.mode ?? 0o644);
    }
    return dir;
  }

  async remove(containerName: string): Promise<void> {
    await rm(this.dirOf(containerName), { recursive: true, force: true });
  }

  /**
   * Removes directories whose container is gone (a worker killed between writing and removing).
   * Younger ones are kept: their container may be about to be created.
   */
  async sweep(liveContainerNames: ReadonlySet<string>, minAgeSeconds: number): Promise<string[]> {
    let entries: string[];
    try {
      entries = await readdir(this.root);
    } catch {
      return [];
    }
    const removed: string[] = [];
    const now = Date.now();
    for (const name of entries) {
      if (liveContainerNames.has(name)) continue;
      const info = await stat(join(this.root, name)).catch(() => null);
      if (!info || (now - info.mtimeMs) / 1000 < minAgeSeconds) continue;
      await this.remove(name);
      removed.push(name);
    }
    return removed;
  }

  private dirOf(containerName: string): string {
    // Container names are [a-zA-Z0-9][a-zA-Z0-9_.-]+ (checked by the sandbox): safe as one path segment.
    if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/.test(containerName))
      throw new Error(`not a container name: ${containerName}`);
    return join(this.root, containerName);
  }
}
