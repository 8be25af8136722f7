import type { Redis as RedisClient } from 'ioredis';

/**
 * The shared per-key windows of the global rate limits, in a Redis-compatible store (Redis ≥ 7,
 * Valkey): one hash per API key, `stk:rl:{<keyId>}`, field = sub-window number (epoch ms / sub-window
 * length), value = requests charged to it. One atomic Lua call per key and sync round charges what the
 * Bridge admitted on credit, returns an unused lease, drops sub-windows that left the window, reads the
 * window's total and reserves a new lease (never past the limit); all keys of a round go in one
 * pipeline. The hash expires one window after its last charge, so an idle key leaves nothing behind.
 */

/** One key's part of a sync round. */
export interface WindowSyncItem {
  keyId: string;
  /** requests the key may make per window */
  budget: number;
  /** the sub-window the Bridge is in */
  sub: number;
  /** requests admitted on credit (without a lease), charged to `debtSub` */
  debt: number;
  debtSub: number;
  /** unused leased requests given back to `retSub` (the sub-window they were charged to) */
  ret: number;
  retSub: number;
  /** requests to reserve now (a lease), charged to `sub` */
  want: number;
}

export interface WindowSyncResult {
  /** requests charged to the window after this call (every Bridge's admissions and leases) */
  total: number;
  /** requests reserved for this Bridge (0 … want) */
  grant: number;
}

/** What the global limiter needs from the store (a fake in unit tests would defeat their point: they use redis-server). */
export interface WindowStore {
  /** one result per item, in order; rejects when the store cannot be reached in time */
  sync(items: WindowSyncItem[], bridges: number): Promise<WindowSyncResult[]>;
  ping(): Promise<void>;
  /** subscribes to the connection going away (so the limiter falls back at once) */
  onDown(fn: () => void): void;
  close(): Promise<void>;
}

/**
 * KEYS[1] the key's hash; ARGV: sub, sub-windows per window, budget, bridges, ttl ms, debt, debtSub,
 * ret, retSub, want. Returns {total, grant}. A lease is at most ceil(free / bridges): one Bridge cannot
 * take what the others need while the window is nearly full.
 */
const SYNC_LUA = `
local cur = tonumber(ARGV[1])
local oldest = cur - tonumber(ARGV[2]) + 1
local budget = tonumber(ARGV[3])
local bridges = tonumber(ARGV[4])
local debt = tonumber(ARGV[6])
local debtSub = tonumber(ARGV[7])
local ret = tonumber(ARGV[8])
local retSub = tonumber(ARGV[9])
local want = tonumber(ARGV[10])
local charged = false
if debt > 0 and debtSub >= oldest then
  redis.call('HINCRBY', KEYS[1], debtSub, debt)
  charged = true
end
if ret > 0 and retSub >= oldest then
  redis.call('HINCRBY', KEYS[1], retSub, -ret)
end
local all = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #all, 2 do
  local f = tonumber(all[i])
  local v = tonumber(all[i + 1])
  if f == nil or f < oldest or v == nil or v <= 0 then
    redis.call('HDEL', KEYS[1], all[i])
  else
    total = total + v
  end
end
local grant = 0
if want > 0 and total < budget then
  grant = math.min(want, math.ceil((budget - total) / bridges))
  redis.call('HINCRBY', KEYS[1], cur, grant)
  total = total + grant
  charged = true
end
if charged then
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
return {total, grant}
`;

type SyncCommand = (key: string, ...args: Array<string | number>) => Promise<[number, number]>;

export interface RedisWindowOptions {
  /** redis:// or rediss:// URL (may hold a password: never logged) */
  url: string;
  subMs: number;
  subWindows: number;
  /** one round (all its commands) must answer within this, else it fails and the limiter falls back */
  timeoutMs: number;
}

export class RedisWindowStore implements WindowStore {
  readonly #o: RedisWindowOptions;
  readonly #redis: RedisClient;
  readonly #down: Array<() => void> = [];

  private constructor(o: RedisWindowOptions, redis: RedisClient) {
    this.#o = o;
    this.#redis = redis;
    redis.defineCommand('stkRateSync', { numberOfKeys: 1, lua: SYNC_LUA });
    // an 'error' event without a listener would crash the process; the limiter reports the state change
    redis.on('error', () => {});
    redis.on('close', () => {
      for (const fn of this.#down) fn();
    });
  }

  /** Loads ioredis only when the component is configured; connects in the background (never blocks the start). */
  static async open(o: RedisWindowOptions): Promise<RedisWindowStore> {
    const { Redis } = await import('ioredis');
    const redis = new Redis(o.url, {
      lazyConnect: false,
      // a command while disconnected fails at once (the limiter falls back) instead of queueing without bound
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: o.timeoutMs,
      connectTimeout: Math.max(1000, o.timeoutMs * 2),
      // reconnects forever, at most every 2 s
      retryStrategy: (times) => Math.min(100 * times, 2000),
      enableAutoPipelining: true,
    });
    return new RedisWindowStore(o, redis);
  }

  onDown(fn: () => void): void {
    this.#down.push(fn);
  }

  async sync(items: WindowSyncItem[], bridges: number): Promise<WindowSyncResult[]> {
    const ttl = Math.ceil(this.#o.subMs * (this.#o.subWindows + 1));
    const cmd = (this.#redis as unknown as { stkRateSync: SyncCommand }).stkRateSync.bind(this.#redis);
    const calls = items.map((i) =>
      cmd(`stk:rl:{${i.keyId}}`, i.sub, this.#o.subWindows, i.budget, Math.max(1, bridges), ttl, i.debt, i.debtSub, i.ret, i.retSub, i.want),
    );
    const replies = await withTimeout(Promise.all(calls), this.#o.timeoutMs);
    return replies.map(([total, grant]) => ({ total: Number(total), grant: Number(grant) }));
  }

  async ping(): Promise<void> {
    const redis = this.#redis;
    // still connecting (the start, a reconnect): wait for it, within the same bound
    const ready =
      redis.status === 'ready'
        ? redis.ping()
        : new Promise<void>((resolve, reject) => {
            const ok = () => {
              redis.off('error', no);
              resolve();
            };
            const no = (e: Error) => {
              redis.off('ready', ok);
              reject(e);
            };
            redis.once('ready', ok);
            redis.once('error', no);
          }).then(() => redis.ping());
    await withTimeout(ready, this.#o.timeoutMs);
    // and the script itself (it loads, it runs): on a key no API key can have, writing nothing
    await this.sync([{ keyId: '-probe-', budget: 1, sub: 0, debt: 0, debtSub: 0, ret: 0, retSub: 0, want: 0 }], 1);
  }

  async close(): Promise<void> {
    this.#down.length = 0;
    try {
      await withTimeout(this.#redis.quit(), 1000);
    } catch {
      this.#redis.disconnect();
    }
  }
}

async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        t = setTimeout(() => reject(new Error(`no answer from the rate-limit store within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    if (t) clearTimeout(t);
    p.catch(() => {}); // a late rejection is not unhandled
  }
}
