/**
 * Small hand-written SVG charts for `npm run bench` (bench/out/*.svg, shown in docs/performance.md):
 * grouped horizontal bars (throughput per config) and step lines (latency CDFs). No dependency, no
 * browser: plain SVG text.
 */

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const fmt = (x: number) => (x >= 10_000 ? `${Math.round(x / 1000)}k` : x >= 1000 ? `${(x / 1000).toFixed(1)}k` : x >= 10 ? x.toFixed(0) : x.toFixed(2));

/** a "nice" axis maximum ≥ x (1, 2, 2.5, 5 × 10^n) */
function niceMax(x: number): number {
  if (!(x > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(x));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

/** One row per config, one bar per series (e.g. c=10, c=50); missing values are left out. */
export function barChart(o: {
  title: string;
  unit: string;
  series: string[];
  rows: Array<{ label: string; values: Array<number | null | undefined> }>;
}): string {
  const labelW = 230;
  const plotW = 460;
  const barH = 12;
  const rowH = barH * o.series.length + 10;
  const top = 46;
  const h = top + rowH * o.rows.length + 40;
  const w = labelW + plotW + 70;
  const max = niceMax(Math.max(0, ...o.rows.flatMap((r) => r.values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v)))));
  const x = (v: number) => labelW + (v / max) * plotW;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">${esc(o.title)}</text>`,
  ];
  o.series.forEach((s, i) => {
    out.push(`<rect x="${labelW + i * 90}" y="28" width="10" height="10" fill="${COLORS[i % COLORS.length]}"/>`);
    out.push(`<text x="${labelW + i * 90 + 14}" y="37">${esc(s)}</text>`);
  });
  for (let t = 0; t <= 4; t++) {
    const v = (max * t) / 4;
    out.push(`<line x1="${x(v)}" y1="${top - 4}" x2="${x(v)}" y2="${h - 30}" stroke="#ddd"/>`);
    out.push(`<text x="${x(v)}" y="${h - 16}" text-anchor="middle" fill="#555">${fmt(v)}</text>`);
  }
  out.push(`<text x="${labelW + plotW / 2}" y="${h - 3}" text-anchor="middle" fill="#555">${esc(o.unit)}</text>`);
  o.rows.forEach((r, ri) => {
    const y0 = top + ri * rowH;
    out.push(`<text x="${labelW - 8}" y="${y0 + rowH / 2 + 2}" text-anchor="end">${esc(r.label)}</text>`);
    r.values.forEach((v, si) => {
      if (typeof v !== 'number' || !Number.isFinite(v)) return;
      const y = y0 + si * barH;
      out.push(`<rect x="${labelW}" y="${y}" width="${Math.max(1, x(v) - labelW)}" height="${barH - 2}" fill="${COLORS[si % COLORS.length]}"/>`);
      out.push(`<text x="${x(v) + 4}" y="${y + barH - 3}" font-size="10" fill="#333">${fmt(v)}</text>`);
    });
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/**
 * CDF lines: each series is a list of (value, cumulative fraction) points, drawn as steps on a log x
 * axis (latencies span decades); the y axis is the fraction of requests (or calls) at or below x.
 */
export function cdfChart(o: { title: string; unit: string; series: Array<{ label: string; points: Array<[number, number]> }> }): string {
  const left = 60;
  const plotW = 560;
  const plotH = 300;
  const top = 50;
  const w = left + plotW + 200;
  const h = top + plotH + 50;
  const all = o.series.flatMap((s) => s.points.map((p) => p[0])).filter((v) => v > 0 && Number.isFinite(v));
  const lo = 10 ** Math.floor(Math.log10(Math.min(...all)));
  const hi = 10 ** Math.ceil(Math.log10(Math.max(...all)));
  const x = (v: number) => left + ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * plotW;
  const y = (q: number) => top + (1 - q) * plotH;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">${esc(o.title)}</text>`,
  ];
  for (let d = lo; d <= hi * 1.0001; d *= 10) {
    out.push(`<line x1="${x(d)}" y1="${top}" x2="${x(d)}" y2="${top + plotH}" stroke="#ddd"/>`);
    out.push(`<text x="${x(d)}" y="${top + plotH + 16}" text-anchor="middle" fill="#555">${fmt(d)}</text>`);
  }
  for (const q of [0, 0.5, 0.9, 0.99, 1]) {
    out.push(`<line x1="${left}" y1="${y(q)}" x2="${left + plotW}" y2="${y(q)}" stroke="#eee"/>`);
    out.push(`<text x="${left - 6}" y="${y(q) + 4}" text-anchor="end" fill="#555">${q}</text>`);
  }
  out.push(`<text x="${left + plotW / 2}" y="${h - 8}" text-anchor="middle" fill="#555">${esc(o.unit)} (log scale)</text>`);
  o.series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    const pts = [...s.points].filter((p) => p[0] > 0 && Number.isFinite(p[0])).sort((a, b) => a[1] - b[1]);
    if (pts.length === 0) return;
    let d = `M ${x(pts[0]![0]).toFixed(1)} ${y(0).toFixed(1)}`;
    for (const [v, q] of pts) d += ` H ${x(v).toFixed(1)} V ${y(q).toFixed(1)}`;
    out.push(`<path d="${d}" fill="none" stroke="${c}" stroke-width="1.6"/>`);
    out.push(`<rect x="${left + plotW + 16}" y="${top + i * 18}" width="10" height="10" fill="${c}"/>`);
    out.push(`<text x="${left + plotW + 30}" y="${top + i * 18 + 9}">${esc(s.label)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

type Fig = { rps?: number; p50_ms?: number; p90_ms?: number; p99_ms?: number; max_ms?: number };
/** <out>/throughput.svg, latency-cdf.svg, verify-cdf.svg from a run's details.json (whatever it measured) */
export function writePlots(out: string, d: Record<string, any>): string[] {
  const rows: Array<{ label: string; c10?: Fig; c50?: Fig }> = [];
  const pt = d.perTarget ?? {};
  const add = (label: string, v?: { c10?: Fig; c50?: Fig }) => v && rows.push({ label, c10: v.c10, c50: v.c50 });
  add('Bridge (1 key)', pt.bridge);
  add('Bridge (100,000 keys)', pt.bridge100k);
  add('Bridge (1,000,000 keys)', d.million ? { c10: d.million.bridge1m } : undefined);
  if (pt.baseline) add('Bridge (baseline)', pt.baseline);
  add('minimal http+pg+auth', pt.minimal);
  add('peer (Platformatic)', pt.peer);
  add('node:http floor (DB=0)', pt.floor);
  add('pgbench -M extended', pt.pgbench);
  add('Bridge insert', d.writes?.bridgeInsert);
  add('minimal insert', d.writes?.minimalInsert);
  add('Bridge update', d.writes?.bridgeUpdate);
  add('minimal update', d.writes?.minimalUpdate);
  const files: string[] = [];
  const put = (name: string, svg: string) => {
    writeFileSync(join(out, name), svg);
    files.push(name);
  };
  if (rows.length)
    put(
      'throughput.svg',
      barChart({
        title: `Throughput per config (medians of ${d.config?.ROUNDS ?? '?'} interleaved rounds, wrk -t2)`,
        unit: 'requests/s',
        series: ['c=10', 'c=50'],
        rows: rows.map((r) => ({ label: r.label, values: [r.c10?.rps, r.c50?.rps] })),
      }),
    );
  const lat = rows
    .filter((r) => r.c50?.p50_ms && r.c50.p99_ms && r.c50.max_ms)
    .map((r) => ({
      label: r.label,
      points: [
        [r.c50!.p50_ms! * 1000, 0.5],
        [r.c50!.p90_ms! * 1000, 0.9],
        [r.c50!.p99_ms! * 1000, 0.99],
        [r.c50!.max_ms! * 1000, 1],
      ] as Array<[number, number]>,
    }));
  if (lat.length)
    put('latency-cdf.svg', cdfChart({ title: 'Request latency at c=50 (wrk p50 / p90 / p99 / max, medians over rounds)', unit: 'µs', series: lat }));
  if (d.verifyCdf)
    put(
      'verify-cdf.svg',
      cdfChart({
        title: 'Key check under load (c=50, in the Bridge): verifyKey vs a bare HMAC-SHA-256 beside it',
        unit: 'ns per call',
        series: [
          { label: 'verifyKey', points: d.verifyCdf.verifyNs },
          { label: 'bare HMAC-SHA-256', points: d.verifyCdf.hmacNs },
        ],
      }),
    );
  return files;
}
