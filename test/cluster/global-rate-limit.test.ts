import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { freePort, waitFor, type Proc } from '../helpers/procs.js';
import { rememberSecret } from '../helpers/secrets.js';
import { ulidTime } from '../../src/common/ulid.js';
import { spawnRedis, type RedisProc } from '../helpers/test-redis.js';
import { call, startStack, type Stack } from '../integration/apikeys.setup.js';

/**
 * Global per-key rate limits on real processes (issue 16 part 1): a Hub, 3 Bridges on one Redis
 * (STK_RATE_LIMIT_REDIS_URL, with a password), PostgreSQL, a round-robin client. The window is 3 s
 * here (STK_RATE_LIMIT_WINDOW_SECONDS, the budget scales: 1200/min → 60 per 3 s) so that the test
 * sees several windows in seconds; production windows are a minute.
 * 1. a key hit at 2× its limit: accepted per window within 5 % of the budget (not 3 ×);
 * 2. Redis killed: every request still answered (200 or 429, never 500), each Bridge enforcing
 *    limit / 3 of a key on its own, said once in each Bridge's log;
 * 3. Redis restarted: global again, the same load within 5 % again.
 */
const WINDOW_MS = 3000;
const LIMIT = 1200; // per minute → 60 per 3-s window (sub-windows of 250 ms)
const BUDGET = (LIMIT * WINDOW_MS) / 60_000;

describe('global per-key rate limits: 3 Bridges + Hub + PostgreSQL + Redis', () => {
  const password = `rl-${randomBytes(8).toString('hex')}`;
  let redis: RedisProc;
  let s: Stack;
  let bridges: Proc[];
  let key: string;

  beforeAll(async () => {
    rememberSecret('password', password);
    redis = await spawnRedis(await freePort(), ['--requirepass', password]);
    const url = `redis://:${password}@127.0.0.1:${redis.port}`;
    s = await startStack({
      bridges: 3,
      hub: { env: { STK_SYNC_HEARTBEAT_MS: '500' } },
      bridgeEnv: {
        STK_RATE_LIMIT_REDIS_URL: url,
        STK_RATE_LIMIT_WINDOW_SECONDS: String(WINDOW_MS / 1000),
        STK_RATE_LIMIT_SYNC_MS: '20',
        STK_SYNC_HEARTBEAT_MS: '500',
      },
    });
    bridges = s.bridges;
    key = (await s.createKey('global', 'reader', ['--rate-limit', `${LIMIT}/min`])).key;
    await waitFor(async () => bridges.every((b) => /global per-key limits through the Redis store/.test(b.logs())), 10_000, 'global limits on every Bridge');
  });
  afterAll(async () => {
    await s?.stop();
    await redis?.stop();
  });

  /** `rate` requests per second round-robin over the Bridges for `ms`; statuses with their send time. */
  async function load(k: string, rate: number, ms: number): Promise<Array<{ at: number; status: number; bridge: number }>> {
    const out: Array<Promise<{ at: number; status: number; bridge: number }>> = [];
    const start = Date.now();
    for (let i = 0; ; i++) {
      const due = start + (i * 1000) / rate;
      if (due >= start + ms) break;
      const wait = due - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const bridge = i % bridges.length;
      const sentAt = Date.now();
      // counted at the time the Bridge took the request (its ULID request id, made in the turn that decides
      // the rate limit): a loaded test process must not move requests between windows
      out.push(
        call(bridges[bridge]!, k, { project: s.project, env: s.env }).then((r) => {
          const at = ulidTime(r.headers.get('x-request-id') ?? '');
          return { at: Number.isFinite(at) ? at : sentAt, status: r.status, bridge };
        }),
      );
    }
    return Promise.all(out);
  }

  /** accepted per window aligned to the epoch (the Bridges' sub-windows are), complete windows only */
  function perWindow(rs: Array<{ at: number; status: number }>): number[] {
    const first = Math.ceil(Math.min(...rs.map((r) => r.at)) / WINDOW_MS);
    const last = Math.floor(Math.max(...rs.map((r) => r.at)) / WINDOW_MS);
    const counts: number[] = [];
    for (let w = first; w < last; w++) counts.push(rs.filter((r) => r.status === 200 && Math.floor(r.at / WINDOW_MS) === w).length);
    return counts;
  }

  it('a key hit at 2× its limit round-robin: accepted per window within 5 % of the limit; Redis killed → limit/N per Bridge, no 500; restarted → global again', async () => {
    const rate = (2 * BUDGET * 1000) / WINDOW_MS; // 2× the limit, per second
    await load(key, rate, 1000); // warm-up: the client's connections, the key's state on each Bridge
    const before = await load(key, rate, 3.2 * WINDOW_MS);
    expect(before.filter((r) => r.status !== 200 && r.status !== 429)).toEqual([]);
    const w1 = perWindow(before);
    process.stdout.write(`global: ${LIMIT}/min (${BUDGET} per ${WINDOW_MS} ms) at 2×, 3 Bridges round-robin: accepted per window ${w1.join(', ')}\n`);
    expect(w1.length).toBeGreaterThanOrEqual(2);
    for (const w of w1) expect(Math.abs(w - BUDGET) / BUDGET, `accepted per window: ${w1.join(', ')}`).toBeLessThanOrEqual(0.05);

    // Redis killed: each Bridge alone, a token bucket of limit / 3 per minute (another key: a fresh bucket)
    await redis.kill();
    await waitFor(async () => bridges.every((b) => /the Redis store does not answer/.test(b.logs())), 10_000, 'every Bridge noticed');
    const small = (await s.createKey('fallback', 'reader', ['--rate-limit', '60/min'])).key;
    const during = await Promise.all(
      bridges.flatMap((b, i) => Array.from({ length: 30 }, () => call(b, small, { project: s.project, env: s.env }).then((r) => ({ i, status: r.status })))),
    );
    expect(during.filter((r) => r.status !== 200 && r.status !== 429)).toEqual([]);
    const perBridge = bridges.map((_, i) => during.filter((r) => r.i === i && r.status === 200).length);
    process.stdout.write(`Redis down: 60/min key, 30 requests on each Bridge → accepted ${perBridge.join(', ')} (limit/N = 20 each)\n`);
    for (const n of perBridge) {
      expect(n).toBeGreaterThanOrEqual(20);
      expect(n).toBeLessThanOrEqual(21);
    }
    for (const b of bridges) expect(b.logs().match(/the Redis store does not answer/g)).toHaveLength(1);

    // back: global again
    await redis.restart();
    await waitFor(async () => bridges.every((b) => /the Redis store answers again/.test(b.logs())), 15_000, 'every Bridge back on Redis');
    const after = await load(key, rate, 2.2 * WINDOW_MS);
    expect(after.filter((r) => r.status !== 200 && r.status !== 429)).toEqual([]);
    const w2 = perWindow(after);
    process.stdout.write(`Redis back: accepted per window ${w2.join(', ')}\n`);
    for (const w of w2) expect(Math.abs(w - BUDGET) / BUDGET, `accepted per window after the restart: ${w2.join(', ')}`).toBeLessThanOrEqual(0.05);
    for (const b of bridges) {
      expect(b.logs()).not.toContain(password);
      expect(b.logs()).not.toContain('redis://');
    }
  });
});
