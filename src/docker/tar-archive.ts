/**
 * Minimal in-memory ustar writer for `putArchive`: regular files plus their parent directories.
 * Hand-written because the Engine API wants a tar stream and no tar library is a declared dependency.
 */
interface TarFile {
  /** Absolute path inside the container, e.g. /benchmark/case.json. */
  path: string;
  content: string | Buffer;
  mode?: number;
}

const BLOCK = 512;

export function tarArchive(files: readonly TarFile[]): Buffer {
  const blocks: Buffer[] = [];
  const dirs = new Set<string>();
  for (const file of files) {
    const segments = splitPath(file.path);
    for (let i = 1; i < segments.length; i++) {
      const dir = segments.slice(0, i).join('/') + '/';
      if (dirs.has(dir)) continue;
      dirs.add(dir);
      blocks.push(header(dir, 0o755, 0, '5'));
    }
    const body = Buffer.isBuffer(file.content) ? file.content : Buffer.from(file.content, 'utf8');
    blocks.push(header(segments.join('/'), file.mode ?? 0o644, body.length, '0'), body);
    const pad = (BLOCK - (body.length % BLOCK)) % BLOCK;
    if (pad) blocks.push(Buffer.alloc(pad));
  }
  blocks.push(Buffer.alloc(BLOCK * 2));
  return Buffer.concat(blocks);
}

function splitPath(path: string): string[] {
  if (!path.startsWith('/')) throw new Error(`tar path must be absolute: ${path}`);
  const segments = path.split('/').filter((s) => s !== '' && s !== '.');
  if (segments.length === 0 || segments.includes('..')) throw new Error(`invalid tar path: ${path}`);
  return segments;
}

function header(name: string, mode: number, size: number, type: '0' | '5'): Buffer {
  const h = Buffer.alloc(BLOCK);
  const [prefix, base] = splitName(name);
  h.write(base, 0, 100, 'utf8');
  octal(h, 100, 8, mode & 0o7777);
  octal(h, 108, 8, 0); // uid root
  octal(h, 116, 8, 0); // gid root
  octal(h, 124, 12, size);
  octal(h, 136, 12, Math.floor(Date.now() / 1000));
  h.fill(0x20, 148, 156); // checksum is computed with its own field as spaces
  h.write(type, 156, 1, 'ascii');
  h.write('ustar\0', 257, 6, 'ascii');
  h.write('00', 263, 2, 'ascii');
  h.write(prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const byte of h) sum += byte;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return h;
}

/** ustar stores long names as prefix (155 bytes) + '/' + name (100 bytes). */
function splitName(name: string): [string, string] {
  if (Buffer.byteLength(name) <= 100) return ['', name];
  // A directory name keeps its trailing slash in the name part.
  const trailing = name.endsWith('/') ? 1 : 0;
  for (let i = name.length - 1 - trailing; i > 0; i--) {
    if (name[i] !== '/') continue;
    const prefix = name.slice(0, i);
    const base = name.slice(i + 1);
    if (Buffer.byteLength(prefix) <= 155 && Buffer.byteLength(base) <= 100) return [prefix, base];
  }
  throw new Error(`tar path too long for ustar: ${name}`);
}

function octal(h: Buffer, offset: number, length: number, value: number): void {
  h.write(value.toString(8).padStart(length - 1, '0') + '\0', offset, length, 'ascii');
}
