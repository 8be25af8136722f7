import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { lstat, open, opendir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { API_KEY_SCAN_RE, parseKey } from '../protocol/key-format.js';

/**
 * `stk apikey scan`: finds Santokit API keys in files and in a git repository's history, by the
 * published regex (API_KEY_SCAN_RE) and the checksum — a match whose checksum is wrong is not a key.
 * Everything stays local: the hits carry the key id only (the secret is never kept past the check).
 */

/** Files (and blobs) larger than this are skipped and reported as skipped. */
export const MAX_SCAN_FILE_BYTES = 5 * 1024 * 1024;
/** A scan stops after this many files (or history blobs), and says so. */
export const MAX_SCAN_FILES = 200_000;
/** Directories never entered: dependencies, and git's own store (read through git with --git-history). */
const SKIP_DIRS = new Set(['node_modules', '.git']);
/** Bytes looked at to decide a file is binary (a NUL among them), like git and grep. */
const BINARY_SNIFF_BYTES = 8000;

export interface KeyHit {
  keyId: string;
  /** the env tag written in the key (cosmetic; the Hub's binding is authoritative) */
  tag: string | null;
  file: string;
  line: number;
  /** a commit containing the blob (history hits only) */
  commit: string | null;
}

export interface ScanStats {
  files: number;
  blobs: number;
  skippedLarge: string[];
  skippedBinary: number;
  skippedUnreadable: string[];
  /** the scan stopped at MAX_SCAN_FILES */
  truncated: boolean;
  /** regex matches whose checksum is wrong: not keys */
  lookalikes: number;
}

export const newStats = (): ScanStats => ({ files: 0, blobs: 0, skippedLarge: [], skippedBinary: 0, skippedUnreadable: [], truncated: false, lookalikes: 0 });

const isBinary = (buf: Buffer) => buf.subarray(0, BINARY_SNIFF_BYTES).includes(0);

/** Keys in one text: each regex match that also passes the checksum, with its 1-based line. */
export function findKeys(text: string, stats: ScanStats): Array<{ keyId: string; tag: string | null; line: number }> {
  const out: Array<{ keyId: string; tag: string | null; line: number }> = [];
  const re = new RegExp(API_KEY_SCAN_RE.source, 'g');
  let line = 1;
  let counted = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const parsed = parseKey(m[0]);
    if (typeof parsed !== 'object') {
      stats.lookalikes++;
      continue;
    }
    // count newlines only up to this match (texts are scanned once, front to back)
    for (let i = text.indexOf('\n', counted); i !== -1 && i < m.index; i = text.indexOf('\n', i + 1)) line++;
    counted = m.index;
    out.push({ keyId: parsed.keyId, tag: parsed.tag ?? null, line });
  }
  return out;
}

function scanBuffer(buf: Buffer, file: string, commit: string | null, stats: ScanStats, hits: KeyHit[]): void {
  if (isBinary(buf)) {
    stats.skippedBinary++;
    return;
  }
  const text = buf.toString('utf8');
  // cheap pre-check: most files hold no key prefix at all
  if (!text.includes('stk_')) return;
  for (const k of findKeys(text, stats)) hits.push({ ...k, file, line: k.line, commit });
}

/** Scans files and directories (recursively; symlinks are not followed). Paths in hits are relative to `cwd`. */
export async function scanPaths(paths: string[], cwd: string, stats: ScanStats, hits: KeyHit[]): Promise<void> {
  const shown = (p: string) => relative(cwd, p) || p;
  const visit = async (p: string, top: boolean): Promise<void> => {
    if (stats.files >= MAX_SCAN_FILES) {
      stats.truncated = true;
      return;
    }
    let st;
    try {
      st = await lstat(p);
    } catch (e) {
      if (top) throw e;
      stats.skippedUnreadable.push(shown(p));
      return;
    }
    if (st.isSymbolicLink()) return;
    if (st.isDirectory()) {
      let dir;
      try {
        dir = await opendir(p);
      } catch {
        stats.skippedUnreadable.push(shown(p));
        return;
      }
      const names: string[] = [];
      for await (const d of dir) if (!(d.isDirectory() && SKIP_DIRS.has(d.name))) names.push(d.name);
      names.sort();
      for (const n of names) await visit(join(p, n), false);
      return;
    }
    if (!st.isFile()) return;
    stats.files++;
    if (st.size > MAX_SCAN_FILE_BYTES) {
      stats.skippedLarge.push(shown(p));
      return;
    }
    let buf: Buffer;
    try {
      const fh = await open(p, 'r');
      try {
        buf = await fh.readFile();
      } finally {
        await fh.close();
      }
    } catch {
      stats.skippedUnreadable.push(shown(p));
      return;
    }
    scanBuffer(buf, shown(p), null, stats, hits);
  };
  for (const p of paths) await visit(p, true);
}

/** Runs git and returns its stdout (for short answers), or throws with its stderr. */
function git(repo: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn('git', ['-C', repo, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    c.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    c.on('error', (e) => reject(new Error(`cannot run git: ${e.message}`)));
    c.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`git ${args[0]} failed: ${err.trim().split('\n')[0] || `exit ${code}`}`))));
  });
}

/** The top of the git work tree containing `dir`, or an error saying it is not one. */
export async function gitTopLevel(dir: string): Promise<string> {
  try {
    return (await git(dir, ['rev-parse', '--show-toplevel'])).trim();
  } catch {
    throw new Error(`${dir} is not inside a git repository (--git-history reads the history of the repository the scan starts in)`);
  }
}

/**
 * Every blob reachable from any ref (`git rev-list --all --objects`), streamed through `git cat-file
 * --batch`: one blob in memory at a time, blobs over MAX_SCAN_FILE_BYTES skipped by their size before
 * being read. Each hit names a commit that contains the blob (the oldest, found afterwards for the few
 * blobs that hold keys only).
 */
export async function scanGitHistory(repo: string, stats: ScanStats, hits: KeyHit[]): Promise<void> {
  // 1. blobs with a path and size: rev-list piped into cat-file --batch-check (%(rest) keeps the path)
  const blobs: Array<{ sha: string; path: string }> = [];
  await new Promise<void>((resolve, reject) => {
    const list = spawn('git', ['-C', repo, 'rev-list', '--all', '--objects'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const check = spawn('git', ['-C', repo, 'cat-file', '--batch-check=%(objectname) %(objecttype) %(objectsize) %(rest)'], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let err = '';
    list.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    check.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    list.stdout.pipe(check.stdin);
    const rl = createInterface({ input: check.stdout });
    rl.on('line', (l) => {
      const m = /^([0-9a-f]{40,64}) (\w+) (\d+) ?(.*)$/.exec(l);
      if (!m || m[2] !== 'blob') return;
      if (blobs.length + stats.blobs >= MAX_SCAN_FILES) {
        stats.truncated = true;
        return;
      }
      if (Number(m[3]) > MAX_SCAN_FILE_BYTES) stats.skippedLarge.push(`${m[1]!.slice(0, 12)}:${m[4]}`);
      else blobs.push({ sha: m[1]!, path: m[4]! });
    });
    // both processes exited and every line was read
    let pending = 3;
    const done = (code: number | null) => {
      if (code !== 0) return reject(new Error(`git rev-list/cat-file failed: ${err.trim().split('\n')[0] || `exit ${code}`}`));
      if (--pending === 0) resolve();
    };
    rl.once('close', () => done(0));
    list.on('error', reject).on('close', done);
    check.on('error', reject).on('close', done);
  });

  // 2. contents, one blob at a time: "<sha> blob <size>\n<content>\n" per request
  const found: Array<{ sha: string; hit: Omit<KeyHit, 'commit'> }> = [];
  if (blobs.length) {
    const cat = spawn('git', ['-C', repo, 'cat-file', '--batch'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let err = '';
    cat.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const exited = new Promise<number | null>((res) => cat.on('close', res));
    const reader = chunkReader(cat.stdout);
    for (const b of blobs) {
      cat.stdin.write(b.sha + '\n');
      const header = (await reader.line()).toString('utf8');
      const m = /^([0-9a-f]+) (\w+) (\d+)$/.exec(header);
      if (!m) throw new Error(`git cat-file: unexpected answer ${JSON.stringify(header.slice(0, 80))}${err ? `: ${err.trim()}` : ''}`);
      const body = await reader.bytes(Number(m[3]) + 1); // content + "\n"
      stats.blobs++;
      const before = hits.length;
      scanBuffer(body.subarray(0, body.length - 1), b.path, null, stats, hits);
      for (const h of hits.splice(before)) found.push({ sha: b.sha, hit: h });
    }
    cat.stdin.end();
    const code = await exited;
    if (code !== 0) throw new Error(`git cat-file failed: ${err.trim() || `exit ${code}`}`);
  }

  // 3. a commit for each blob holding a key: the oldest one that added it
  const commitOf = new Map<string, string>();
  for (const { sha } of found) {
    if (commitOf.has(sha)) continue;
    const out = await git(repo, ['log', '--all', '--reverse', '--format=%H', `--find-object=${sha}`]);
    commitOf.set(sha, out.split('\n')[0]?.trim().slice(0, 12) || '?');
  }
  for (const { sha, hit } of found) hits.push({ ...hit, commit: commitOf.get(sha)! });
}

/** Reads a child's stdout as lines and exact byte counts, pulling chunks only as needed (no quadratic copying). */
function chunkReader(stream: NodeJS.ReadableStream) {
  const it = (stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  const chunks: Buffer[] = [];
  let length = 0;
  const more = async () => {
    const r = await it.next();
    if (r.done) throw new Error('git cat-file ended early');
    chunks.push(r.value);
    length += r.value.length;
  };
  const take = (n: number): Buffer => {
    const all = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, length);
    chunks.length = 0;
    const out = all.subarray(0, n);
    if (all.length > n) chunks.push(all.subarray(n));
    length = all.length - n;
    return out;
  };
  return {
    async line(): Promise<Buffer> {
      for (;;) {
        let offset = 0;
        for (const c of chunks) {
          const i = c.indexOf(10);
          if (i !== -1) {
            const l = take(offset + i + 1);
            return l.subarray(0, l.length - 1);
          }
          offset += c.length;
        }
        await more();
      }
    },
    async bytes(n: number): Promise<Buffer> {
      while (length < n) await more();
      return take(n);
    },
  };
}
