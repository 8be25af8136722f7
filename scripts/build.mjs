// Bundles the CLI (and with it Hub, Bridge and dev) into dist/ with code splitting, so `stk --version`
// loads only the small entry chunk. Dependencies stay external (resolved from node_modules).
import { build } from 'esbuild';
import { readFileSync, rmSync } from 'node:fs';

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
rmSync(new URL('../dist', import.meta.url), { recursive: true, force: true });
await build({
  entryPoints: { cli: 'src/cli/main.ts' },
  outdir: 'dist',
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
