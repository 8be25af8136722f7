/**
 * The findings of the review on the Hub's `/internal/*` channel, replayed against a real Hub + Bridge:
 * encoded and absolute-form spellings of internal paths, and acks / usage reports forged by a caller
 * that does not own the Bridge's stream.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SYNC_SESSION_HEADER } from '../../src/protocol/sync.js';
import { startStack, type KeyInfo, type Stack } from '../helpers/fuzz-stack.js';
import { rawRequest } from '../helpers/raw-http.js';

describe('security: the internal channel', () => {
  let s: Stack;
  let key: KeyInfo;
  let bridgeId: string;
  const svc = () => ({ 'x-santokit-service-token': s.hub.serviceToken, 'content-type': 'application/json' });
  const cluster = async () =>
    (await (await fetch(`${s.hub.url}/internal/sync/cluster`, { headers: svc() })).json()) as { items: Array<{ bridgeId: string; ackedSeq: number }> };

  beforeAll(async () => {
    s = await startStack({ bridges: 1 });
    key = await s.createKey('guard-key', ['reader']);
    const items = (await cluster()).items;
    expect(items).toHaveLength(1);
    bridgeId = items[0]!.bridgeId;
  }, 120_000);
  afterAll(async () => {
    await s?.stop();
  });

  it('encoded and absolute-form spellings of /internal/* never skip the service token', async () => {
    let n = 0;
    for (const target of [
      '/%69nternal/sync/snapshot',
      '/int%65rnal/sync/snapshot',
      '/%69%6E%74ernal/sync/bridges',
      '/INTERNAL/sync/snapshot',
      '//internal/sync/snapshot',
      '/./internal/sync/snapshot',
      '/api/../internal/sync/snapshot',
    ]) {
      const r = await rawRequest(s.hub.url, 'GET', target);
      n++;
      expect([401, 404], `${target} → ${r.status} ${r.body.slice(0, 100)}`).toContain(r.status);
      expect(r.body).not.toContain('pepper');
    }
    for (const target of [
      'http://x/internal/sync/bridges',
      `${s.hub.url}/internal/sync/snapshot`,
      '/internal%2Fsync/snapshot',
      '/..%2Finternal/sync/snapshot',
    ]) {
      const r = await rawRequest(s.hub.url, 'GET', target);
      n++;
      expect(r.status, `${target} → ${r.status} ${r.body.slice(0, 100)}`).toBe(400);
      expect(r.json.error.code).toBe('BAD_REQUEST');
      expect(r.body).not.toContain('pepper');
    }
    console.log(`[security] internal guard: ${n} spellings of /internal/* refused`);
  });

  it("an ack or usage report without the stream's session is refused, and changes nothing", async () => {
    const before = (await cluster()).items.find((b) => b.bridgeId === bridgeId)!.ackedSeq;
    for (const session of [undefined, '', 'forged-session', 'x'.repeat(24)]) {
      const ack = await fetch(`${s.hub.url}/internal/sync/ack`, {
        method: 'POST',
        headers: svc(),
        body: JSON.stringify({ bridgeId, session, seqs: [before + 1_000_000] }),
      });
      expect(ack.status).toBe(409);
      expect(((await ack.json()) as any).error.code).toBe('CONFLICT');
      const usage = await fetch(`${s.hub.url}/internal/sync/usage`, {
        method: 'POST',
        headers: svc(),
        body: JSON.stringify({
          bridgeId,
          session,
          keys: [{ keyId: key.keyId, minutes: [], lastUsedAt: new Date().toISOString(), sources: [{ address: '203.0.113.66', count: 5 }] }],
        }),
      });
      expect(usage.status).toBe(409);
    }
    const after = (await cluster()).items.find((b) => b.bridgeId === bridgeId)!.ackedSeq;
    expect(after).toBe(before);
    const dry = await s.api('POST', `/api/projects/${s.project}/envs/${s.env}/apikeys/${key.keyId}/revoke`, { dryRun: true });
    expect(dry.status).toBe(200);
    expect(JSON.stringify(dry.json)).not.toContain('203.0.113.66');
  });

  it('a stream acknowledges only what it was sent', async () => {
    const ac = new AbortController();
    const res = await fetch(`${s.hub.url}/internal/sync/stream?bridgeId=probe-bridge`, { headers: svc(), signal: ac.signal });
    expect(res.status).toBe(200);
    const session = res.headers.get(SYNC_SESSION_HEADER);
    expect(session).toMatch(/^[A-Za-z0-9_-]{20,}$/);
    try {
      // its own session, a seq it was never sent
      const far = await fetch(`${s.hub.url}/internal/sync/ack`, {
        method: 'POST',
        headers: svc(),
        body: JSON.stringify({ bridgeId: 'probe-bridge', session, seqs: [1_000_000_000] }),
      });
      expect(far.status).toBe(400);
      // the real Bridge's id with this stream's session: not its stream
      const other = await fetch(`${s.hub.url}/internal/sync/ack`, { method: 'POST', headers: svc(), body: JSON.stringify({ bridgeId, session, seqs: [1] }) });
      expect(other.status).toBe(409);
    } finally {
      ac.abort();
    }
  });

  it('the real Bridge still acknowledges: a revoke waits for it and the key stops working', async () => {
    const call = () =>
      fetch(`${s.bridges[0]!.url}/call`, {
        method: 'POST',
        headers: { 'x-santokit-api-key': key.key, 'content-type': 'application/json' },
        body: JSON.stringify({ path: 'db/users/select', params: { limit: 1 } }),
      });
    expect((await call()).status).toBe(200);
    const r = await s.api('POST', `/api/projects/${s.project}/envs/${s.env}/apikeys/${key.keyId}/revoke`, {});
    expect(r.status, r.text).toBe(200);
    expect(JSON.stringify(r.json)).toMatch(/"lagging":\[\]/);
    expect((await call()).status).toBe(401);
  });
});
