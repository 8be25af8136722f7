// Bundles the CLI (and with it Hub, Bridge and dev) into dist/ with code splitting, so `stk --version`
// loads only the small entry chunk. Dependencies stay external (resolved from node_modules).
// Builds into a temp dir, then renames files into dist/ one by one (chunks first, entry last), so a
// process starting from dist/ during a rebuild never reads a half-written file.
import { build } from 'esbuild';
import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const tmp = join(root, `.dist-tmp-${process.pid}`);
const out = join(root, 'dist');
rmSync(tmp, { recursive: true, force: true });
try {
  await build({
    entryPoints: { cli: join(root, 'src/cli/main.ts') },
    outdir: tmp,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    packages: 'external',
    sourcemap: true,
    define: { __STK_VERSION__: JSON.stringify(pkg.version) },
    logLevel: 'warning',
  });
  mkdirSync(out, { recursive: true });
  const files = readdirSync(tmp).sort((a, b) => Number(a.startsWith('cli.')) - Number(b.startsWith('cli.')));
  for (const f of files) renameSync(join(tmp, f), join(out, f));
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
