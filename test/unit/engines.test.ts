import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import semver from 'semver';

/**
 * `npm install` printed `EBADENGINE cookie@2.0.2 required: { node: '>=22' }` while the README said Node
 * 20: the engines we declare and those of every installed package must agree, for each supported line.
 */
describe('engines', () => {
  const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { engines: { node: string } };
  const lock = JSON.parse(readFileSync('package-lock.json', 'utf8')) as {
    packages: Record<string, { version?: string; engines?: { node?: string } | string[] }>;
  };
  const range = pkg.engines.node;
  // the lowest version of each supported major
  const lows = range.split('||').map((r) => semver.minVersion(r.trim())!.version);

  it('Node 20, 22 and 24 are supported, and this Node is one of them', () => {
    expect(lows.map((v) => semver.major(v))).toEqual([20, 22, 24]);
    expect(semver.satisfies(process.versions.node, range)).toBe(true);
  });

  it('every package in the lockfile accepts the lowest version of each supported line (no EBADENGINE)', () => {
    const bad: string[] = [];
    for (const [path, p] of Object.entries(lock.packages)) {
      const want = Array.isArray(p.engines) ? undefined : p.engines?.node;
      if (!path || !want) continue;
      for (const v of lows) if (!semver.satisfies(v, want)) bad.push(`${path.replace(/^.*node_modules\//, '')}@${p.version} wants node ${want}, not ${v}`);
    }
    expect(bad).toEqual([]);
  });
});
