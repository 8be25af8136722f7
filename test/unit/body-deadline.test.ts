import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import { describe, expect, it, vi } from 'vitest';
import { BodyDeadlines } from '../../src/common/body-deadline.js';

/** what BodyDeadlines reads of a request: whether its body completed, whether it was destroyed */
const request = () =>
  Object.assign(new EventEmitter(), { complete: false, destroyed: false }) as unknown as IncomingMessage & { complete: boolean; destroyed: boolean };
const turn = () => new Promise((r) => setImmediate(r));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('BodyDeadlines: one shared sweep bounds bodies still arriving', () => {
  it('bodies that complete within the turn are never tracked; a trickled body gets the error once, after its deadline', async () => {
    const d = new BodyDeadlines(300, () => new Error('too slow'));
    const started = Date.now();
    const errors: unknown[] = [];
    // 1000 requests whose body arrives right after the route starts reading it (the common case)
    for (let i = 0; i < 1000; i++) {
      const raw = request();
      d.watch(raw, raw);
      raw.complete = true;
    }
    // one that trickles, one whose client goes away
    const slow = request();
    slow.on('error', (e) => errors.push(e));
    d.watch(slow, slow);
    const gone = request();
    gone.on('error', (e) => errors.push(e));
    d.watch(gone, gone);
    await turn();
    expect(d.slow).toBe(2);
    gone.destroyed = true;
    await sleep(50);
    // not before its deadline (checked only when this machine did not stall past it)
    if (Date.now() - started < 300) expect(errors).toEqual([]);
    await vi.waitFor(() => expect(errors).toHaveLength(1), { timeout: 3000, interval: 20 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
    expect((errors[0] as Error).message).toBe('too slow');
    expect(d.slow).toBe(0);
    await sleep(60);
    expect(errors).toHaveLength(1);
    d.close();
  });

  it('a body that completes late, before its deadline, is dropped without an error', async () => {
    const d = new BodyDeadlines(1000, () => new Error('too slow'));
    const raw = request();
    let errored = false;
    raw.on('error', () => (errored = true));
    d.watch(raw, raw);
    await turn();
    expect(d.slow).toBe(1);
    raw.complete = true;
    await vi.waitFor(() => expect(d.slow).toBe(0), { timeout: 3000, interval: 10 });
    await sleep(100);
    expect(errored).toBe(false);
    d.close();
  });
});
