/**
 * The Bridge's in-memory releases, one per (project, env), compiled once on arrival, plus the
 * PostgreSQL pools they run on. Pools are keyed by (project, env, connection) and never shared across
 * tenants, even when two envs point at the same URL. A changed URL swaps the pool: new queries use the
 * new one at once, the old one drains its in-flight queries and closes.
 */
import type { FastifyBaseLogger } from 'fastify';
import type { ReleaseIR } from '../../protocol/release.js';
import { closePool, openPool, ping, poolStats, type Pool, type PoolSettings, type PoolStats } from '../executor/index.js';
import { compileRelease, type CompiledRelease } from './compile.js';

export type { CompiledColumn, CompiledRelation, CompiledRelease, CompiledRule, CompiledTable } from './compile.js';

/** One env as `/call` sees it. */
export interface ActiveEnv {
  readonly project: string;
  readonly env: string;
  readonly release: CompiledRelease;
  /** connection name → pool */
  readonly pools: ReadonlyMap<string, Pool>;
}

interface EnvState {
  project: string;
  env: string;
  release: CompiledRelease | null;
  /** epoch ms the current release was created on the Hub (NaN when none or unknown) */
  createdAt: number;
  urls: Map<string, string>;
  pools: Map<string, Pool>;
  active: ActiveEnv | undefined;
}

const key = (project: string, env: string) => project + '\u0000' + env;

export class ReleaseCache {
  readonly #envs = new Map<string, EnvState>();
  readonly #settings: PoolSettings;
  readonly #log: FastifyBaseLogger;
  #closed = false;

  constructor(settings: PoolSettings, log: FastifyBaseLogger) {
    this.#settings = settings;
    this.#log = log;
  }

  /**
   * Installs (or replaces) the release and connection URLs of an env. `release: null` means the env
   * has no current release: `/call` answers 503 for it. Compiles before touching any state, so an IR
   * that fails to compile leaves the previous release serving.
   */
  set(project: string, env: string, release: ReleaseIR | null, connections: Record<string, string>): void {
    if (this.#closed) return; // shutting down: late sync updates are ignored
    const compiled = release ? compileRelease(release) : null;
    const k = key(project, env);
    let st = this.#envs.get(k);
    if (!st) {
      st = { project, env, release: null, createdAt: NaN, urls: new Map(), pools: new Map(), active: undefined };
      this.#envs.set(k, st);
    }
    const retired: Pool[] = [];
    for (const [name, pool] of st.pools) {
      const url = connections[name];
      if (url === undefined || url !== st.urls.get(name)) {
        retired.push(pool);
        st.pools.delete(name);
        st.urls.delete(name);
      }
    }
    for (const [name, url] of Object.entries(connections)) {
      if (st.pools.has(name) || typeof url !== 'string' || !url) continue;
      try {
        st.pools.set(name, openPool(url, name, this.#settings));
        st.urls.set(name, url);
      } catch (e) {
        // an unusable or refused URL leaves the connection unconfigured (its tables answer 503); the
        // reason names the host at most, never the URL
        this.#log.warn({ project, env, connection: name, reason: (e as Error).message }, 'connection URL rejected');
      }
    }
    st.release = compiled;
    st.createdAt = release ? Date.parse(release.createdAt) : NaN;
    st.active = compiled ? { project, env, release: compiled, pools: st.pools } : undefined;
    if (compiled) this.#log.info({ project, env, releaseId: compiled.releaseId, tables: compiled.tables.size }, 'release loaded');
    for (const p of retired) void closePool(p);
  }

  /** The env with its compiled release, or undefined when none is loaded. */
  get(project: string, env: string): ActiveEnv | undefined {
    return this.#envs.get(key(project, env))?.active;
  }

  /** Forgets an env and closes its pools. */
  async delete(project: string, env: string): Promise<void> {
    const k = key(project, env);
    const st = this.#envs.get(k);
    if (!st) return;
    this.#envs.delete(k);
    await Promise.all([...st.pools.values()].map((p) => closePool(p)));
  }

  /** (project, env) pairs currently known. */
  keys(): Array<{ project: string; env: string; releaseId: string | null }> {
    return [...this.#envs.values()].map((s) => ({ project: s.project, env: s.env, releaseId: s.release?.releaseId ?? null }));
  }

  /** Each env's release creation time and its pools' state now (for /metrics). */
  stats(): Array<{ project: string; env: string; releaseCreatedAt: number; pools: PoolStats[] }> {
    return [...this.#envs.values()].map((s) => ({
      project: s.project,
      env: s.env,
      releaseCreatedAt: s.release ? s.createdAt : NaN,
      pools: [...s.pools.values()].map(poolStats),
    }));
  }

  /** True iff the env has a release and every connection its tables use answers `select 1`. */
  async ready(project: string, env: string, timeoutMs = 2000): Promise<boolean> {
    const active = this.get(project, env);
    if (!active) return false;
    const pools: Pool[] = [];
    for (const name of active.release.connections) {
      const pool = active.pools.get(name);
      if (!pool) return false;
      pools.push(pool);
    }
    const results = await Promise.all(pools.map((p) => ping(p, timeoutMs)));
    return results.every(Boolean);
  }

  async close(): Promise<void> {
    this.#closed = true;
    const all = [...this.#envs.values()];
    this.#envs.clear();
    await Promise.all(all.flatMap((s) => [...s.pools.values()].map((p) => closePool(p, 2))));
  }
}
