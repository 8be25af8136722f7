import { readFileSync } from 'node:fs';

/**
 * Summarises a V8 `.cpuprofile` (from `node --cpu-prof`): self time per function and per area
 * (Santokit source by directory, each npm package, node internals, GC, idle), as shares of the
 * non-idle time.
 */

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

export function area(url: string, fn: string): string {
  if (fn === '(garbage collector)') return 'GC';
  if (fn === '(idle)') return 'idle';
  if (fn === '(program)') return '(program)';
  if (!url) return 'native / V8';
  if (url.startsWith('node:')) return 'node internals';
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + 14).split('/');
    return rest[0]!.startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  const src = /\/src\/([^/]+\/(?:[^/]+\/)?)/.exec(url);
  if (src) return `santokit src/${src[1]}`;
  if (url.includes('/dist/')) return 'santokit dist';
  return url;
}

export interface ProfileSummary {
  totalMs: number;
  busyMs: number;
  areas: Array<{ area: string; ms: number; pct: number }>;
  functions: Array<{ fn: string; where: string; area: string; ms: number; pct: number }>;
}

/**
 * `window` (µs on the monotonic clock, which V8's profile timestamps and `process.hrtime` share on
 * Linux) keeps only the samples of the measured load, not the process start-up.
 */
export function summarizeProfile(file: string, top = 30, window?: { fromUs: number; toUs: number }): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    const d = p.timeDeltas[i] ?? 0;
    t += d;
    if (window && (t < window.fromUs || t > window.toUs)) continue;
    self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + d / 1000);
  }
  const areas = new Map<string, number>();
  const fns = new Map<string, { fn: string; where: string; area: string; ms: number }>();
  let total = 0;
  let idle = 0;
  for (const [id, ms] of self) {
    const n = byId.get(id)!;
    const { functionName, url, lineNumber } = n.callFrame;
    const a = area(url, functionName);
    total += ms;
    if (a === 'idle') {
      idle += ms;
      continue;
    }
    areas.set(a, (areas.get(a) ?? 0) + ms);
    const where = url ? `${url.replace(/^file:\/\//, '').replace(/^.*\/(node_modules|src|dist)\//, '$1/')}:${lineNumber + 1}` : '';
    const k = `${functionName}@${where}`;
    const f = fns.get(k) ?? { fn: functionName || '(anonymous)', where, area: a, ms: 0 };
    f.ms += ms;
    fns.set(k, f);
  }
  const busy = total - idle;
  const pct = (ms: number) => Math.round((ms / busy) * 1000) / 10;
  return {
    totalMs: Math.round(total),
    busyMs: Math.round(busy),
    areas: [...areas].map(([a, ms]) => ({ area: a, ms: Math.round(ms), pct: pct(ms) })).sort((x, y) => y.ms - x.ms),
    functions: [...fns.values()]
      .sort((x, y) => y.ms - x.ms)
      .slice(0, top)
      .map((f) => ({ ...f, ms: Math.round(f.ms), pct: pct(f.ms) })),
  };
}

export function formatProfile(s: ProfileSummary): string {
  const lines = [`busy ${s.busyMs} ms of ${s.totalMs} ms sampled`, '', 'by area (self time):'];
  for (const a of s.areas.slice(0, 25)) lines.push(`  ${String(a.pct).padStart(5)} %  ${a.area}`);
  lines.push('', 'top functions (self time):');
  for (const f of s.functions) lines.push(`  ${String(f.pct).padStart(5)} %  ${f.fn}  ${f.where}`);
  return lines.join('\n');
}
