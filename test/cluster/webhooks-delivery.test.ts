import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHub, TEST_OWNER, waitFor } from '../helpers/procs.js';
import { loginToken } from '../helpers/cli.js';
import { createTestDatabase, query } from '../helpers/pg.js';
import { rememberSecret } from '../helpers/secrets.js';
import { HubApi } from '../helpers/hub-api.js';
import { startReceiver, verifyStandardWebhook, type Receiver } from '../helpers/webhook-receiver.js';

/**
 * The webhook queue with two Hub processes on one PostgreSQL store: retries after 500s and
 * timeouts (same webhook-id, exponential backoff), failed after the retry window, 410 disables the
 * endpoint, every delivery sent by exactly one Hub (no duplicates), and a Hub killed with SIGKILL in
 * the middle of an attempt: its lease expires and the restarted Hub sends it again, same webhook-id.
 */
type Hub = Awaited<ReturnType<typeof startHub>>;
const P = 'shop';
const HUB_ENV = (port: number) => ({
  STK_WEBHOOK_ALLOW_HOSTS: `127.0.0.1:${port}`,
  STK_WEBHOOK_POLL_MS: '50',
  STK_WEBHOOK_TIMEOUT_MS: '3000',
  STK_WEBHOOK_LEASE_MS: '4000',
  STK_WEBHOOK_BACKOFF_BASE_MS: '150',
  STK_WEBHOOK_BACKOFF_MAX_MS: '600',
  STK_WEBHOOK_RETRY_FOR: '6s',
  STK_WEBHOOK_ENDPOINT_CONCURRENCY: '4',
});

describe('webhook delivery: two Hubs, one PostgreSQL store', () => {
  let recv: Receiver;
  let store: Awaited<ReturnType<typeof createTestDatabase>>;
  const hubs: Hub[] = [];
  let http: HubApi;
  let owner: string;

  const addHook = async (path: string) => {
    const r = await http.request('POST', `/api/projects/${P}/webhooks`, { url: `${recv.url}${path}`, events: ['apikey.created'] });
    expect(r.status, r.text).toBe(201);
    return { id: r.json.webhookId as string, secret: rememberSecret('webhook-secret', r.json.secret as string) };
  };
  /** queues a webhook.test event through hub i */
  const fire = async (id: string, i = 0) => {
    const r = await new HubApi(hubs[i]!.url, owner).request('POST', `/api/projects/${P}/webhooks/${id}/test`);
    expect(r.status, r.text).toBe(202);
    return r.json.deliveryId as string;
  };
  const delivery = async (webhook: string, deliveryId: string) => {
    const r = await http.request('GET', `/api/projects/${P}/webhooks/deliveries?webhook=${webhook}&limit=1000`);
    expect(r.status, r.text).toBe(200);
    return (r.json.items as any[]).find((d) => d.deliveryId === deliveryId);
  };
  const startOne = (port?: number) =>
    startHub({ port, dbUrl: store.url, secretKey: hubs[0]?.secretKey, serviceToken: hubs[0]?.serviceToken, env: HUB_ENV(recv.port) });

  beforeAll(async () => {
    recv = await startReceiver();
    store = await createTestDatabase('whcluster');
    hubs.push(await startOne());
    hubs.push(await startOne());
    owner = await loginToken(hubs[0]!.url, TEST_OWNER.email, TEST_OWNER.password);
    http = new HubApi(hubs[1]!.url, owner);
    expect((await http.request('POST', '/api/projects', { name: P })).status).toBe(201);
  }, 60_000);
  afterAll(async () => {
    for (const h of hubs) await h.stop();
    await recv?.close();
    await store?.drop();
  });

  it('500, 500, then 200: three attempts with the same webhook-id, each signed anew, backoff growing; recorded as succeeded', async () => {
    const h = await addHook('/flaky');
    recv.script('/flaky', [{ status: 500 }, { status: 503 }, { status: 200 }]);
    const id = await fire(h.id);
    await waitFor(async () => (await delivery(h.id, id))?.status === 'succeeded', 10_000, 'flaky delivered');
    const got = recv.at('/flaky');
    expect(got.map((r) => r.headers['webhook-id'])).toEqual([id, id, id]);
    for (const r of got) expect(verifyStandardWebhook(h.secret, r.headers, r.body)).toBe(true);
    expect(new Set(got.map((r) => r.body)).size).toBe(1); // the same body every time
    const gaps = [got[1]!.at - got[0]!.at, got[2]!.at - got[1]!.at];
    expect(gaps[0]).toBeGreaterThanOrEqual(150 * 0.8 - 60); // ~150 ms ±20 % (polled every 50 ms)
    expect(gaps[1]).toBeGreaterThan(gaps[0]!); // ~600 ms: ×4
    expect(await delivery(h.id, id)).toMatchObject({ status: 'succeeded', attempts: 3, lastResponseStatus: 200, lastError: null, nextAttemptAt: null });
  });

  it('an attempt that times out is retried with the same webhook-id; while failing, deliveries show the code, error and next retry', async () => {
    const h = await addHook('/slow');
    recv.script('/slow', [{ status: 200, delayMs: 4000 }, { status: 500 }, { status: 204 }]);
    const id = await fire(h.id);
    await waitFor(async () => (await delivery(h.id, id))?.lastError?.startsWith('timed out after 3000 ms') === true, 10_000, 'timeout recorded');
    await waitFor(async () => recv.at('/slow').length >= 2, 10_000, 'second attempt');
    await waitFor(async () => (await delivery(h.id, id))?.lastResponseStatus === 500, 10_000, '500 recorded');
    const mid = await delivery(h.id, id);
    if (mid.status === 'pending') expect(mid).toMatchObject({ lastError: 'HTTP 500', nextAttemptAt: expect.any(String) });
    await waitFor(async () => (await delivery(h.id, id))?.status === 'succeeded', 10_000, 'slow delivered');
    expect(recv.at('/slow').map((r) => r.headers['webhook-id'])).toEqual([id, id, id]);
    expect(await delivery(h.id, id)).toMatchObject({ attempts: 3, lastResponseStatus: 204 });
  });

  it('failing past the retry window (STK_WEBHOOK_RETRY_FOR) is failed; 410 Gone disables the endpoint at once', async () => {
    const down = await addHook('/down');
    recv.script('/down', [{ status: 502 }]);
    const id = await fire(down.id);
    await waitFor(async () => (await delivery(down.id, id))?.status === 'failed', 20_000, 'failed after the window');
    const d = await delivery(down.id, id);
    expect(d).toMatchObject({ status: 'failed', lastResponseStatus: 502, nextAttemptAt: null });
    expect(d.attempts).toBeGreaterThanOrEqual(4);
    expect(recv.at('/down')).toHaveLength(d.attempts);

    const gone = await addHook('/gone');
    recv.script('/gone', [{ status: 410 }]);
    const g = await fire(gone.id);
    await waitFor(async () => (await delivery(gone.id, g))?.status === 'failed', 10_000, '410 failed');
    const list = (await http.request('GET', `/api/projects/${P}/webhooks`)).json.items as any[];
    expect(list.find((w) => w.webhookId === gone.id)).toMatchObject({ status: 'disabled', disabledReason: expect.stringContaining('410 Gone') });
    expect((await http.request('POST', `/api/projects/${P}/webhooks/${gone.id}/test`)).status).toBe(409);
    expect(recv.at('/gone')).toHaveLength(1);
  });

  it('60 deliveries queued through both Hubs: each received exactly once, one attempt each (both Hubs claim from the same queue)', async () => {
    const h = await addHook('/many');
    // each answer takes 200 ms: the 60 span several poll intervals (1 s) of both Hubs, so neither can drain the
    // queue alone before the other's worker looks (a 20 ms receiver let one Hub send all 60 on a fast run)
    recv.script('/many', [{ status: 200, delayMs: 200 }]);
    const ids = await Promise.all(Array.from({ length: 60 }, (_, i) => fire(h.id, i % 2)));
    await waitFor(async () => recv.at('/many').length >= 60, 20_000, '60 deliveries');
    await new Promise((r) => setTimeout(r, 500)); // a duplicate would arrive now
    const got = recv.at('/many').map((r) => r.headers['webhook-id']);
    expect(got).toHaveLength(60);
    expect(new Set(got)).toEqual(new Set(ids));
    const rows = await query<{ status: string; attempts: number; n: string }>(
      store.url,
      `select status, attempts, count(*) as n from webhook_deliveries where endpoint_id = $1 group by status, attempts`,
      [h.id],
    );
    expect(rows.map((r) => [r.status, Number(r.attempts), Number(r.n)])).toEqual([['succeeded', 1, 60]]);
    // and both Hubs did send some (lease_owner: the Hub of the last attempt)
    const owners = await query<{ lease_owner: string }>(store.url, 'select distinct lease_owner from webhook_deliveries where endpoint_id = $1', [h.id]);
    expect(owners).toHaveLength(2);
  });

  it('a Hub killed (SIGKILL) mid-attempt: its lease expires and the restarted Hub sends the delivery again, same webhook-id', async () => {
    const h = await addHook('/crash');
    // the first attempt is held open: the receiver never answers it
    recv.script('/crash', [{ status: 200, hang: true }, { status: 200 }]);
    const arrived = new Promise<void>((res) => {
      recv.onRequest = (r) => r.path === '/crash' && res();
    });
    const id = await fire(h.id);
    await arrived;
    recv.onRequest = undefined;
    // both Hubs die at once (either may hold the lease): nobody is left to answer for it
    const ports = hubs.map((x) => x.port);
    await Promise.all(hubs.map((x) => x.kill9()));
    const [row] = await query<{ lease_owner: string | null; attempts: number; status: string }>(
      store.url,
      'select lease_owner, attempts, status from webhook_deliveries where id = $1',
      [id],
    );
    expect(row).toMatchObject({ status: 'pending', attempts: 1, lease_owner: expect.stringMatching(/^hub-/) });
    hubs.splice(0, 2, await startOne(ports[0]));
    await waitFor(async () => recv.at('/crash').length >= 2, 15_000, 'resent after restart');
    const got = recv.at('/crash');
    expect(got.map((r) => r.headers['webhook-id'])).toEqual([id, id]);
    expect(got[1]!.at - got[0]!.at).toBeGreaterThanOrEqual(3000); // not before the lease ran out
    expect(verifyStandardWebhook(h.secret, got[1]!.headers, got[1]!.body)).toBe(true);
    await waitFor(
      async () =>
        (await new HubApi(hubs[0]!.url, owner).request('GET', `/api/projects/${P}/webhooks/deliveries?webhook=${h.id}`)).json.items[0]?.status === 'succeeded',
      5000,
      'recorded',
    );
  });
});
