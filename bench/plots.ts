/**
 * Redraws the plots of one or more finished runs: `npx tsx bench/plots.ts <outDir> [<outDir>…]` reads
 * each dir's details.json (later dirs' sections override earlier ones, so runs of different BENCH_ONLY
 * sections combine) and writes throughput.svg, latency-cdf.svg and verify-cdf.svg into the first dir.
 * `npm run bench` draws them itself at the end of a run.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { writePlots } from './lib/plots.js';

const dirs = process.argv.slice(2).map((d) => resolve(d));
if (dirs.length === 0) throw new Error('usage: npx tsx bench/plots.ts <outDir> [<outDir>…]');
const details = Object.assign({}, ...dirs.map((d) => JSON.parse(readFileSync(join(d, 'details.json'), 'utf8')) as object));
for (const f of writePlots(dirs[0]!, details)) process.stdout.write(`${join(dirs[0]!, f)}\n`);
