// Bundles the CLI (and with it Hub, Bridge and dev) into dist/ with code splitting, so `stk --version`
// loads only the small entry chunk. Dependencies stay external (resolved from node_modules).
// Also builds `santokit/client` (package.json `exports`): dist/client.js, one self-contained ESM file
// for apps (browsers and Node, no dependencies), with its declarations in dist/types/.
// Builds into a temp dir, then renames files into dist/ one by one (chunks first, entry last), so a
// process starting from dist/ during a rebuild never reads a half-written file.
import { build } from 'esbuild';
import ts from 'typescript';
import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const tmp = join(root, `.dist-tmp-${process.pid}`);
const out = join(root, 'dist');
rmSync(tmp, { recursive: true, force: true });

/** dist/types/**: declarations of the client and the protocol types it re-exports. */
function clientDeclarations() {
  const program = ts.createProgram([join(root, 'src/client/index.ts')], {
    declaration: true,
    emitDeclarationOnly: true,
    outDir: join(tmp, 'types'),
    rootDir: join(root, 'src'),
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    lib: ['lib.es2022.d.ts', 'lib.dom.d.ts'],
    types: [],
    strict: true,
    skipLibCheck: true,
  });
  const result = program.emit();
  const diagnostics = [...ts.getPreEmitDiagnostics(program), ...result.diagnostics];
  if (diagnostics.length) {
    const host = { getCanonicalFileName: (f) => f, getCurrentDirectory: () => root, getNewLine: () => '\n' };
    throw new Error(`client declarations:\n${ts.formatDiagnostics(diagnostics, host)}`);
  }
}

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
  await build({
    entryPoints: [join(root, 'src/client/index.ts')],
    outfile: join(tmp, 'client.js'),
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    target: 'es2022',
    sourcemap: true,
    logLevel: 'warning',
  });
  clientDeclarations();
  mkdirSync(out, { recursive: true });
  const rank = (f) => (f.startsWith('cli.') ? 2 : f === 'types' ? 1 : 0);
  const files = readdirSync(tmp).sort((a, b) => rank(a) - rank(b));
  for (const f of files) {
    if (f === 'types') rmSync(join(out, f), { recursive: true, force: true });
    renameSync(join(tmp, f), join(out, f));
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
