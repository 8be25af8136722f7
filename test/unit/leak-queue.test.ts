import { describe, expect, it } from 'vitest';
import { AppError } from '../../src/protocol/errors.js';
import {
  MAX_PENDING_PER_TOKEN,
  MAX_PENDING_REPORTS,
  REPORTED_KEYS_PER_TOKEN_PER_MIN,
  ReportQueue,
  type LeakReporter,
  type Pending,
} from '../../src/hub/services/leaks.js';

/** The leak-report queue's shares (issue 16 review, finding 1): per-token budget and backlog, served round-robin. */
describe('leak-report queue: each token gets a bounded share', () => {
  const reporter = (tokenId: string): LeakReporter => ({ tokenId, tokenName: tokenId, orgId: 'org' });
  const keys = (tokenId: string, n: number): Pending[] =>
    Array.from({ length: n }, (_, i) => ({
      reporter: reporter(tokenId),
      item: { token: `${tokenId}-${i}`, url: null, source: null },
      requestId: null,
      ip: null,
    }));
  const refusal = (f: () => void): AppError => {
    try {
      f();
    } catch (e) {
      if (e instanceof AppError) return e;
      throw e;
    }
    throw new Error('admitted');
  };

  it('a token over its minute budget is refused (429, Retry-After until the budget covers the report); another token is not', () => {
    const q = new ReportQueue();
    q.admit(reporter('a'), keys('a', REPORTED_KEYS_PER_TOKEN_PER_MIN - 50), 0);
    // drained meanwhile: the backlog is not what refuses it
    while (q.next());
    const e = refusal(() => q.admit(reporter('a'), keys('a', 100), 0));
    expect(e.code).toBe('TOO_MANY_REQUESTS');
    expect(e.message).toBe(`this leak-report token reported more than ${REPORTED_KEYS_PER_TOKEN_PER_MIN} keys in the last minute: retry later`);
    // 50 keys missing at 1,000 a minute: 3 s
    expect(e.headers).toEqual({ 'retry-after': '3' });
    expect(q.size).toBe(0); // a refused report queues nothing
    q.admit(reporter('b'), keys('b', 100), 0);
    // the budget refills: 3 s later the same report goes through
    q.admit(reporter('a'), keys('a', 100), 3_000);
    expect(q.size).toBe(200);
  });

  it('a token whose keys are still waiting is refused beyond its share, whatever its budget; others still get in', () => {
    const q = new ReportQueue();
    for (let i = 0; i < MAX_PENDING_PER_TOKEN / 100; i++) q.admit(reporter('a'), keys('a', 100), i * 60_000);
    const e = refusal(() => q.admit(reporter('a'), keys('a', 1), 3_600_000));
    expect(e.code).toBe('TOO_MANY_REQUESTS');
    expect(e.message).toBe(
      `this leak-report token has ${MAX_PENDING_PER_TOKEN} keys waiting to be checked (at most ${MAX_PENDING_PER_TOKEN} per token): retry later`,
    );
    expect(e.headers?.['retry-after']).toBe('10');
    q.admit(reporter('b'), keys('b', 100), 3_600_000);
    // one of a's checked: room for one more of a's
    q.next();
    q.admit(reporter('a'), keys('a', 1), 3_600_000);
  });

  it('the Hub-wide bound still holds when many tokens fill their shares', () => {
    const q = new ReportQueue();
    const tokens = MAX_PENDING_REPORTS / MAX_PENDING_PER_TOKEN;
    for (let t = 0; t < tokens; t++) for (let i = 0; i < MAX_PENDING_PER_TOKEN / 100; i++) q.admit(reporter(`t${t}`), keys(`t${t}`, 100), i * 60_000);
    expect(q.size).toBe(MAX_PENDING_REPORTS);
    const e = refusal(() => q.admit(reporter('late'), keys('late', 1), 0));
    expect(e.message).toBe('too many leak reports waiting to be checked: retry later');
  });

  it('keys are checked one token at a time in turn, so a backlog delays no other token', () => {
    const q = new ReportQueue();
    q.admit(reporter('a'), keys('a', 500), 0);
    q.admit(reporter('b'), keys('b', 2), 0);
    q.admit(reporter('c'), keys('c', 1), 0);
    const order = Array.from({ length: 7 }, () => q.next()!.item.token);
    expect(order).toEqual(['a-0', 'b-0', 'c-0', 'a-1', 'b-1', 'a-2', 'a-3']);
    // a token that comes back joins the end of the line
    q.admit(reporter('c'), keys('c', 1), 0);
    expect([q.next()!.item.token, q.next()!.item.token]).toEqual(['a-4', 'c-0']);
    expect(q.size).toBe(495);
  });
});
