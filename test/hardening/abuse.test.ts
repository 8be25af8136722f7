/**
 * Abuse: 5,000 invalid API keys from one address get 429 after the per-address limit, from the headers
 * alone (malformed bodies are not even parsed, no SQL runs, the Bridge spends microseconds of CPU on
 * each), while a valid key from that same address is still served; a
 * wrong-password flood on login gets 429 without hashing; body (10 MB) and header (16 KB) limits hold
 * on Hub and Bridge, with the error envelope.
 */
import { existsSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HttpClient, Tally, startStack, type KeyInfo, type Resp, type Stack } from '../helpers/fuzz-stack.js';
import { query } from '../helpers/pg.js';
import { TEST_OWNER } from '../helpers/procs.js';

const SOAK = process.env.STK_SOAK === '1';
const FLOOD = SOAK ? 50_000 : 5_000;
const LOGIN_FLOOD = 200;

/** CPU milliseconds (user + system) a process has used so far, from /proc; null elsewhere. */
function cpuMs(pid: number | undefined): number | null {
  const f = `/proc/${pid}/stat`;
  if (!pid || !existsSync(f)) return null;
  const fields = readFileSync(f, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime + stime, USER_HZ = 100
}

/**
 * POST with a large Content-Length. `early`: the server must answer from the headers alone (413), so
 * only the first 64 KB are sent and the client waits: a client that kept pushing megabytes would race
 * the server's close (EPIPE) and could lose the answer. Otherwise the whole body is sent.
 */
function postBig(url: string, headers: Record<string, string>, body: Buffer, early = false): Promise<{ status: number; json: any }> {
  return new Promise((resolve) => {
    const req = request(url, { method: 'POST', headers: { ...headers, 'content-length': body.length } }, (res) => {
      let data = '';
      res.on('data', (d) => (data += d));
      res.on('error', () => resolve({ status: res.statusCode ?? 0, json: undefined }));
      res.on('end', () => {
        let json: any;
        try {
          json = JSON.parse(data);
        } catch {
          json = undefined;
        }
        req.destroy();
        resolve({ status: res.statusCode ?? 0, json });
      });
    });
    req.on('error', () => resolve({ status: 0, json: undefined }));
    if (early) req.write(body.subarray(0, 65536));
    else req.end(body);
  });
}

/** Raw request with oversized headers; returns the status line and body. */
function bigHeaders(url: string, headerBytes: number): Promise<{ status: number; json: any }> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const sock = connect(Number(u.port), u.hostname);
    let text = '';
    sock.on('data', (d) => (text += d.toString('latin1')));
    sock.on('error', () => {});
    sock.on('close', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
      let json: any;
      try {
        json = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4));
      } catch {
        json = undefined;
      }
      resolve({ status, json });
    });
    sock.end(
      `POST ${u.pathname} HTTP/1.1\r\nHost: ${u.host}\r\nContent-Type: application/json\r\nX-Padding: ${'p'.repeat(headerBytes)}\r\nContent-Length: 2\r\n\r\n{}`,
    );
  });
}

const isEnvelope = (r: { json: any }) =>
  typeof r.json?.error?.code === 'string' && typeof r.json?.error?.message === 'string' && typeof r.json?.error?.requestId === 'string';

describe('abuse', () => {
  let s: Stack;
  let key: KeyInfo;
  let client: HttpClient;
  let dbOid: number;
  beforeAll(async () => {
    s = await startStack({ bridges: 1 });
    key = await s.createKey('abuse', ['admin']);
    client = new HttpClient(s.bridges[0]!.url, 16);
    await query(s.dbUrl, 'create extension if not exists pg_stat_statements');
    dbOid = (await query<{ oid: number }>(s.dbUrl, 'select oid::int as oid from pg_database where datname = current_database()'))[0]!.oid;
  }, 120_000);
  afterAll(async () => {
    client?.close();
    await s?.stop();
  });

  it('body and header size limits hold on Hub and Bridge, with the envelope', async () => {
    const json = { 'content-type': 'application/json' };
    const over = Buffer.alloc(10 * 1024 * 1024 + 1, 0x20);
    const bridgeBody = await postBig(`${s.bridges[0]!.url}/call`, { ...json, 'x-santokit-api-key': key.key }, over, true);
    const hubBody = await postBig(`${s.hub.url}/api/auth/login`, json, over, true);
    // just under the limit is read and judged on its content
    const under = Buffer.from(JSON.stringify({ path: 'db/users/select', params: { where: { email: 'x'.repeat(9 * 1024 * 1024) } } }));
    const bridgeUnder = await postBig(`${s.bridges[0]!.url}/call`, { ...json, 'x-santokit-api-key': key.key }, under);
    const bridgeHeaders = await bigHeaders(`${s.bridges[0]!.url}/call`, 20_000);
    const hubHeaders = await bigHeaders(`${s.hub.url}/api/auth/login`, 20_000);
    console.log(
      `abuse limits: 10 MB + 1 body → bridge ${bridgeBody.status}, hub ${hubBody.status}; 9 MB body → bridge ${bridgeUnder.status}; 20 KB of headers → bridge ${bridgeHeaders.status}, hub ${hubHeaders.status}; all with the envelope: ${[bridgeBody, hubBody, bridgeHeaders, hubHeaders].every(isEnvelope)}`,
    );
    expect(bridgeBody.status).toBe(413);
    expect(hubBody.status).toBe(413);
    expect(bridgeBody.json.error.code).toBe('PAYLOAD_TOO_LARGE');
    expect(hubBody.json.error.code).toBe('PAYLOAD_TOO_LARGE');
    expect(bridgeUnder.status).toBe(200);
    expect(bridgeHeaders.status).toBe(431);
    expect(hubHeaders.status).toBe(431);
    for (const r of [bridgeBody, hubBody, bridgeHeaders, hubHeaders]) expect(isEnvelope(r), JSON.stringify(r.json)).toBe(true);
    expect((await fetch(s.bridges[0]!.url + '/healthz')).status).toBe(200);
  }, 60_000);

  it(`${LOGIN_FLOOD} wrong-password logins from one address → 429 without hashing; the existing session still works`, async () => {
    const hub = new HttpClient(s.hub.url, 8);
    const statuses = new Map<number, number>();
    const tally = new Tally();
    await hub.run(
      Array.from({ length: LOGIN_FLOOD }, (_, i) => i),
      async (i) => {
        const r = await hub.send(
          'POST',
          '/api/auth/login',
          { 'content-type': 'application/json' },
          { email: TEST_OWNER.email, password: `wrong-password-${i}` },
        );
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        tally.add(r, `login #${i}`);
      },
    );
    // the right password from the flooding address is refused too, until the window ends
    const right = await hub.send('POST', '/api/auth/login', { 'content-type': 'application/json' }, { email: TEST_OWNER.email, password: TEST_OWNER.password });
    // the cost of a refused attempt alone: another round, all of it throttled
    const before2 = cpuMs(s.hub.child.pid);
    await hub.run(
      Array.from({ length: LOGIN_FLOOD }, (_, i) => i),
      async (i) => {
        const r = await hub.send('POST', '/api/auth/login', { 'content-type': 'application/json' }, { email: TEST_OWNER.email, password: `wrong-again-${i}` });
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        tally.add(r, `login again #${i}`);
      },
    );
    const after = cpuMs(s.hub.child.pid);
    const session = await s.api('GET', '/api/projects');
    hub.close();
    const throttled = statuses.get(429) ?? 0;
    const cpuPer429 = before2 !== null && after !== null ? (after - before2) / LOGIN_FLOOD : null;
    console.log(
      `abuse login: ${LOGIN_FLOOD * 2} wrong passwords → ${statuses.get(401) ?? 0} × 401 then ${throttled} × 429 (retry-after ${right.headers['retry-after']}s); right password from that address → ${right.status}; existing session → ${session.status}; hub CPU ${cpuPer429 === null ? 'n/a' : cpuPer429.toFixed(2) + ' ms'} per refused attempt`,
    );
    expect(tally.problems, tally.problems.join('\n')).toEqual([]);
    // the default limit is 10 failures per address per 5 minutes, however many are sent at once
    expect(statuses.get(401)).toBe(10);
    expect(throttled).toBe(LOGIN_FLOOD * 2 - 10);
    expect(right.status).toBe(429);
    expect(Number(right.headers['retry-after'])).toBeGreaterThan(0);
    expect(session.status).toBe(200);
    // an argon2 verification costs tens of milliseconds: a refused attempt must not run one
    if (cpuPer429 !== null) expect(cpuPer429).toBeLessThan(5);
  }, 60_000);

  it(`${FLOOD} invalid API keys from one address → 429 without parsing a body; a valid key from that address is served`, async () => {
    const bridge = s.bridges[0]!;
    await query(s.dbUrl, 'select pg_stat_statements_reset(0, $1::oid, 0)', [dbOid]);
    const tally = new Tally();
    const statuses = new Map<number, number>();
    const before = cpuMs(bridge.child.pid);
    const send = (i: number, body: string | object) =>
      client.send(
        'POST',
        '/call',
        { 'content-type': 'application/json', 'x-santokit-api-key': `stk_dev_INVALID${String(i).padStart(8, '0')}_${'a'.repeat(28)}` },
        body,
      );
    // 1. well-formed requests with made-up keys until the address is blocked
    let firstBlocked = -1;
    let i = 0;
    while (firstBlocked < 0 && i < 1000) {
      const r = await send(i++, { path: 'db/users/select' });
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      tally.add(r, `invalid key #${i}`);
      if (r.status === 429) firstBlocked = i;
    }
    // 2. the rest of the flood, concurrently; half with malformed JSON: a body that was parsed would get 400
    const after429 = new Map<number, number>();
    await client.run(
      Array.from({ length: FLOOD - i }, (_, j) => i + j),
      async (n) => {
        const r = await send(n, n % 2 ? '{"path":' : { path: 'db/users/select' });
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        after429.set(r.status, (after429.get(r.status) ?? 0) + 1);
        tally.add(r, `invalid key #${n}`);
      },
    );
    const after = cpuMs(bridge.child.pid);
    const sqlRan = (
      await query<{ n: string }>(
        s.dbUrl,
        "select coalesce(sum(calls), 0) as n from pg_stat_statements where dbid = $1::oid and query not ilike '%pg_stat_statements%' and query !~* '^select (1|\\$1)$'",
        [dbOid],
      )
    )[0]!.n;
    // a valid key from the same address is served: other clients' garbage never locks it out
    const valid: Resp = await client.send('POST', '/call', { 'content-type': 'application/json', 'x-santokit-api-key': key.key }, { path: 'db/users/select' });
    const health = await fetch(bridge.url + '/healthz');
    const blocked = statuses.get(429) ?? 0;
    const cpuPer = before !== null && after !== null ? ((after - before) * 1000) / FLOOD : null;
    console.log(
      `abuse keys: ${FLOOD} invalid keys → ${statuses.get(401) ?? 0} × 401, then 429 from request #${firstBlocked} on (${blocked} × 429; after the limit ${after429.get(429) ?? 0}/${FLOOD - firstBlocked} refused, ${after429.get(400) ?? 0} bodies parsed); valid key from that address → ${valid.status}; ${sqlRan} SQL statements ran; bridge CPU ${cpuPer === null ? 'n/a' : cpuPer.toFixed(0) + ' µs'} per request; ${tally.fiveXX} × 5xx, ${tally.missingRequestId} missing requestId`,
    );
    expect(tally.problems, tally.problems.join('\n')).toEqual([]);
    expect(tally.fiveXX).toBe(0);
    // the default limit is 100 invalid keys per address per minute; after it, everything is 429 unparsed
    expect(firstBlocked).toBe(101);
    expect(statuses.get(401)).toBe(100);
    expect(after429.get(429)).toBe(FLOOD - firstBlocked);
    expect(blocked).toBe(FLOOD - 100);
    expect(valid.status).toBe(200);
    expect(Number(sqlRan)).toBe(0);
    expect(health.status).toBe(200);
    if (cpuPer !== null) expect(cpuPer).toBeLessThan(2000);
  }, 120_000);
});
