import { describe, expect, it } from 'vitest';
import madge from 'madge';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');

/** No runtime import cycle in src/ (type-only imports are erased by the compiler and do not count). */
describe('module graph', () => {
  it('src/ has no circular runtime import', async () => {
    const graph = await madge(join(ROOT, 'src'), {
      fileExtensions: ['ts'],
      tsConfig: join(ROOT, 'tsconfig.json'),
      detectiveOptions: { ts: { skipTypeImports: true }, es6: { skipTypeImports: true } },
    });
    expect(Object.keys(graph.obj()).length).toBeGreaterThan(50);
    expect(graph.circular()).toEqual([]);
  }, 60_000);
});
