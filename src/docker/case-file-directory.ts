import { chmod, mkdir, readdir, rm, rmdir, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Where a case container finds the files we give it (case.json, the mock gateway's CA). */
export const CASE_FILES_ROOT = '/benchmark';

const MOUNTABLE = new RegExp(`^${CASE_FILES_ROOT}/[a-zA-Z0-9_][a-zA-Z0-9_.-]*$`);

const DIRECTORY_MODE = 0o755;
const FILE_MODE = 0o644;
let umask: number | undefined;

/** True when the process umask would create `mode` narrower than asked (then it is set explicitly). */
function narrowedByUmask(mode: number): boolean {
  // Reading without setting is only documentation-deprecated (racy with a concurrent setter; we have none).
  umask ??= process.umask();
  return (mode & ~umask) !== mode;
}

function checkMountable(files: readonly CaseFile[]): void {
  for (const file of files) {
    if (!CaseFileDirectory.mountable(file.path))
      throw new Error(`not a file directly in ${CASE_FILES_ROOT}: ${file.path}`);
  }
}

interface CaseFile {
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
  /** The files this process wrote per container: removing them needs no directory listing. */
  private readonly written = new Map<string, string[]>();
  private rootReady: Promise<unknown> | null = null;

  constructor(readonly root: string) {}

  /** True for a file directly in /benchmark (what one mount of this directory can carry). */
  static mountable(path: string): boolean {
    return MOUNTABLE.test(path);
  }

  /**
   * Replaces the directory of `containerName` with `files`; returns its host path. It is on the
   * critical path of every case, hence the few system calls: mkdir, then open/write/close per file.
   */
  async write(containerName: string, files: readonly CaseFile[]): Promise<string> {
    const dir = this.dirOf(containerName);
    checkMountable(files);
    await this.makeFresh(dir);
    this.written.set(containerName, []);
    // Readable by whatever user the image runs as; modes the umask would narrow are set explicitly.
    if (narrowedByUmask(DIRECTORY_MODE)) await chmod(dir, DIRECTORY_MODE);
    await this.writeInto(containerName, dir, files);
    return dir;
  }

  /**
   * Adds `files` to the directory write() made, in place: a running container has it mounted (a
   * warm container handed to its case), and a directory made anew would not be the mounted one.
   */
  async add(containerName: string, files: readonly CaseFile[]): Promise<void> {
    checkMountable(files);
    await this.writeInto(containerName, this.dirOf(containerName), files);
  }

  private async writeInto(containerName: string, dir: string, files: readonly CaseFile[]): Promise<void> {
    const names = this.written.get(containerName) ?? [];
    this.written.set(containerName, names);
    for (const file of files) {
      const name = file.path.slice(CASE_FILES_ROOT.length + 1);
      const mode = file.mode ?? FILE_MODE;
      const target = join(dir, name);
      await writeFile(target, file.content, { mode, flag: 'wx' });
      names.push(name);
      if (narrowedByUmask(mode)) await chmod(target, mode);
    }
  }

  async remove(containerName: string): Promise<void> {
    const dir = this.dirOf(containerName);
    const names = this.written.get(containerName);
    this.written.delete(containerName);
    if (names) {
      try {
        for (const name of names) await unlink(join(dir, name));
        await rmdir(dir);
        return;
      } catch {
        // Changed behind our back (or already gone): fall back to removing whatever is there.
      }
    }
    await rm(dir, { recursive: true, force: true });
  }

  /** A new, empty directory: a leftover of the same name (a killed worker's) is removed first. */
  private async makeFresh(dir: string): Promise<void> {
    this.rootReady ??= mkdir(this.root, { recursive: true }).catch((err: unknown) => {
      this.rootReady = null;
      throw err;
    });
    await this.rootReady;
    try {
      await mkdir(dir, { mode: DIRECTORY_MODE });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST' && code !== 'ENOENT') throw err;
      // EEXIST: a leftover; ENOENT: the root itself was removed meanwhile (a tmp cleaner).
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir, { recursive: true, mode: DIRECTORY_MODE });
    }
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
      // Not a container's (a warm pool owner's liveness file, src/docker/warm-pool.ts).
      if (name.startsWith('.')) continue;
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
