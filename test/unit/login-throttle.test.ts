import { describe, expect, it } from 'vitest';
import { AuditBudget, LoginThrottle, isRefusal, type LoginTicket } from '../../src/hub/services/login-throttle.js';

const MIN = 60_000;
const ticket = (r: ReturnType<LoginThrottle['begin']>): LoginTicket => {
  if (isRefusal(r)) throw new Error(`refused: ${JSON.stringify(r)}`);
  return r;
};

describe('LoginThrottle (time is passed in: no clocks)', () => {
  it('per address: 10 failures in 5 minutes, counted from the start of each attempt (concurrent ones see each other)', () => {
    const t = new LoginThrottle();
    const results = Array.from({ length: 25 }, (_, i) => t.begin('10.0.0.1', `acct-${i}`, 1000));
    expect(results.filter((r) => !isRefusal(r))).toHaveLength(10);
    const refused = results.filter(isRefusal);
    expect(refused).toHaveLength(15);
    expect(refused.every((r) => r.scope === 'address' && r.retryAfterMs === 5 * MIN)).toBe(true);
    // the window slides
    expect(isRefusal(t.begin('10.0.0.1', 'x', 1000 + 5 * MIN))).toBe(false);
  });

  it('per account: 10 failures from any number of addresses lock it, with doubling backoff up to an hour', () => {
    const t = new LoginThrottle();
    let now = 0;
    const locks: number[] = [];
    for (let round = 0; round < 7; round++) {
      for (let i = 0; i < 10; i++) ticket(t.begin(`10.1.${round}.${i}`, 'victim', now));
      const r = t.begin(`10.2.${round}.1`, 'victim', now);
      expect(isRefusal(r) && r.scope).toBe('account');
      locks.push((r as { retryAfterMs: number }).retryAfterMs / MIN);
      now += (r as { retryAfterMs: number }).retryAfterMs;
    }
    expect(locks).toEqual([5, 10, 20, 40, 60, 60, 60]);
    // an hour of quiet after the last failure: strikes decay
    now += 61 * MIN;
    for (let i = 0; i < 10; i++) ticket(t.begin(`10.3.0.${i}`, 'victim', now));
    const r = t.begin('10.3.1.1', 'victim', now);
    expect(isRefusal(r) && r.retryAfterMs).toBe(5 * MIN);
  });

  it('an address the account logged in from keeps its own budget during a lock; its success does not unlock others', () => {
    const t = new LoginThrottle();
    t.succeeded(ticket(t.begin('192.0.2.7', 'owner', 0)), 0);
    for (let i = 0; i < 10; i++) ticket(t.begin(`198.51.100.${i}`, 'owner', 10));
    expect(isRefusal(t.begin('198.51.100.200', 'owner', 20))).toBe(true);
    const home = ticket(t.begin('192.0.2.7', 'owner', 30));
    expect(home.counted).toBe(false);
    t.succeeded(home, 30);
    // still locked for unfamiliar addresses
    const r = t.begin('198.51.100.201', 'owner', 40);
    expect(isRefusal(r) && r.scope).toBe('account');
  });

  it('a success from an unfamiliar address (before any lock) resets the account', () => {
    const t = new LoginThrottle();
    for (let i = 0; i < 9; i++) ticket(t.begin(`203.0.113.${i}`, 'a', 0));
    t.succeeded(ticket(t.begin('203.0.113.50', 'a', 1)), 1);
    for (let i = 0; i < 9; i++) ticket(t.begin(`203.0.113.${100 + i}`, 'a', 2));
    expect(isRefusal(t.begin('203.0.113.200', 'a', 3))).toBe(false);
  });

  it('memory stays bounded under a distributed flood; a locked account survives the pruning', () => {
    const t = new LoginThrottle({ maxTracked: 1000 });
    for (let i = 0; i < 10; i++) ticket(t.begin(`10.9.0.${i}`, 'target', 0));
    for (let i = 0; i < 20_000; i++) t.begin(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, `spray-${i}`, 1 + i);
    expect(t.size.addresses).toBeLessThanOrEqual(1000);
    expect(t.size.accounts).toBeLessThanOrEqual(1000);
    const r = t.begin('10.200.0.1', 'target', 30_000);
    expect(isRefusal(r) && r.scope).toBe('account');
  });
});

describe('AuditBudget', () => {
  it('writes at most N rows a minute and reports how many it left out in the next row', () => {
    const b = new AuditBudget(3);
    const taken = Array.from({ length: 10 }, () => b.take(0));
    expect(taken.filter(Boolean)).toHaveLength(3);
    expect(b.take(59_999)).toBeNull();
    expect(b.take(60_000)).toEqual({ suppressed: 8 });
    expect(b.take(60_001)).toEqual({ suppressed: 0 });
  });
});
