import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatKey, newKeyId, newSecret } from '../../src/protocol/key-format.js';
import { createTestDatabase } from '../helpers/pg.js';
import { waitFor } from '../helpers/procs.js';
import { rememberSecret } from '../helpers/secrets.js';
import { startStack, type Stack } from './apikeys.setup.js';

/**
 * Issue 16 security review, finding 1: one leak-report token must not be able to fill the leak queue
 * every project shares. A real Hub on a PostgreSQL store; the test holds a lock on `api_keys` so the
 * Hub's checks of reported keys wait (the queue fills as it would behind a slow database), token A
 * reports as much as the Hub takes, and token B's report must still be accepted and acted on.
 */
describe('POST /api/leaks: each token gets a bounded share', () => {
  let store: Awaited<ReturnType<typeof createTestDatabase>>;
  let s: Stack;
  const lock = { client: null as pg.Client | null };

  const neverIssued = () => rememberSecret('api-key', formatKey(newKeyId(), newSecret(), 'dev'));
  const report = async (token: string, keys: string[]) => {
    const r = await fetch(`${s.hub.url}/api/leaks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ keys, url: 'https://example.com/flood', source: 'content' }),
    });
    const text = await r.text();
    return { status: r.status, retryAfter: r.headers.get('retry-after'), text, json: JSON.parse(text) as any };
  };
  const leakToken = async (name: string) => {
    const r = await s.api('POST', '/api/leaks/tokens', { name });
    expect(r.status, r.text).toBe(201);
    return rememberSecret('leak-token', r.json.token as string);
  };

  beforeAll(async () => {
    store = await createTestDatabase('leakshare');
    // a Hub on that store, a project with an applied release (keys need its roles), no Bridge
    s = await startStack({ bridges: 0, hub: { dbUrl: store.url } });
  }, 60_000);
  afterAll(async () => {
    await lock.client?.end().catch(() => undefined);
    await s?.stop();
    await store?.drop();
  });

  it('token A floods until refused (429 + Retry-After, its own share named); token B is still accepted and its key acted on', async () => {
    const created = await s.api('POST', `/api/projects/${s.project}/envs/${s.env}/apikeys`, { name: 'victim', roles: ['reader'] });
    expect(created.status, created.text).toBe(201);
    const victim = { key: rememberSecret('api-key', created.json.apiKey as string), keyId: created.json.keyId as string };
    const a = await leakToken('flooder');
    const b = await leakToken('honest');

    // the Hub's checks of reported keys wait behind this lock: nothing leaves the queue until it is released
    lock.client = new pg.Client({ connectionString: store.url });
    await lock.client.connect();
    await lock.client.query('BEGIN');
    await lock.client.query('LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE');

    // A sends as much as the Hub takes: 100-key reports until refused, then 1-key reports until refused
    let accepted = 0;
    let refusal: Awaited<ReturnType<typeof report>> | undefined;
    for (const size of [100, 1]) {
      for (let i = 0; i < 20_000 / size; i++) {
        const r = await report(
          a,
          Array.from({ length: size }, () => neverIssued()),
        );
        if (r.status === 202) {
          accepted += size;
          continue;
        }
        refusal = r;
        break;
      }
    }
    // B reports the victim key (behind A's backlog, with the checks still held): accepted all the same
    const rb = await report(b, [victim.key]);
    expect(rb.status, rb.text).toBe(202);
    expect(rb.json).toEqual({ received: 1 });

    expect(refusal, 'the flood was never refused').toBeDefined();
    expect(refusal!.status).toBe(429);
    expect(refusal!.json.error).toMatchObject({ code: 'TOO_MANY_REQUESTS', requestId: expect.any(String) });
    expect(refusal!.json.error.message).toContain('this leak-report token');
    expect(Number(refusal!.retryAfter)).toBeGreaterThanOrEqual(1);
    // A got its share — 1,000 keys a minute, plus the few that refilled while it flooded — and no more
    // (the Hub-wide queue holds 10,000)
    expect(accepted).toBeGreaterThanOrEqual(1_000);
    expect(accepted).toBeLessThan(1_100);
    console.log(`[leaks] token A: ${accepted} keys accepted, then 429 (${refusal!.json.error.message}; Retry-After ${refusal!.retryAfter})`);

    await lock.client.query('COMMIT');
    // and checked: the default policy suspends it
    await waitFor(
      async () => {
        const k = await s.api('GET', `/api/projects/${s.project}/envs/${s.env}/apikeys/${victim.keyId}`);
        return k.json.status === 'suspended';
      },
      15_000,
      "token B's report acted on",
    );
    const leaked = await s.api('GET', `/api/audit?project=${s.project}&action=apikey.leaked`);
    expect(leaked.json.items).toEqual([
      expect.objectContaining({ detail: expect.objectContaining({ keyId: victim.keyId, reportedBy: expect.objectContaining({ tokenName: 'honest' }) }) }),
    ]);
  }, 120_000);
});
