/**
 * Finding 4 of the review (issue 12): a connection URL reached the Hub's own unix socket
 * (`postgres://u@%2Ftmp%2F…/db` → connected as the local superuser without a password), probed the
 * filesystem (`%2Fetc%2Fpasswd` → `ENOTDIR`), and a database server's error text reached the CLI with
 * its escape sequences. Replayed against real processes (Hub, Bridge, `stk`, the test PostgreSQL):
 *
 *  - a corpus of URLs (unix sockets, encoded and odd hosts, loopback / metadata / link-local
 *    addresses in every spelling, odd parameters, userinfo tricks, IPv6 zones, very long inputs,
 *    control characters) is refused when saved: 400, the error envelope, a message with no control
 *    character, no secret, no echo of the URL and no filesystem fact;
 *  - hosts the operator allows (STK_CONNECTION_ALLOW_HOSTS, exact port) and ordinary remote hosts are
 *    accepted, and the allowed ones really connect;
 *  - a URL saved while allowed is refused when used once it is not: `connections test`, `stk apply`
 *    and the Bridge's pool; a host name is checked by what it resolves to when connecting;
 *  - a database server's error full of terminal escapes reaches the envelope and the CLI without them,
 *    and the CLI strips them from whatever a Hub sends.
 */
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loginToken, runStk, tempConfigDir } from '../helpers/cli.js';
import { EXAMPLE_DIR } from '../helpers/fuzz-stack.js';
import { createTestDatabase, DATABASE_URL, TEST_ALLOW_HOSTS } from '../helpers/pg.js';
import { startBridge, startHub, TEST_OWNER, waitFor, type Proc } from '../helpers/procs.js';
import { rememberSecret } from '../helpers/secrets.js';

const PW: string = rememberSecret('password', 'Conn-Pw-9f3a7c1e');
const PG = new URL(DATABASE_URL);
const PG_PORT = Number(PG.port || 5432);
/** where scripts/test-pg.sh puts the test PostgreSQL's unix socket (trust authentication) */
const SOCKET_DIR = process.env.STK_TEST_PG_DIR ?? '/tmp/stk-test-pg';
/** the terminal escapes a hostile database server puts in its error text */
const EVIL =
  'role \u001b[31m"x"\u001b[0m does not exist\u001b]0;pwned-title\u0007\u001b[2J\u001b]8;;http://evil.example/\u001b\\link\u001b]8;;\u001b\\ \u009b31m\rSPOOF';
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;
const FS_FACTS =
  /ENOTDIR|ENOENT|EACCES|EISDIR|ELOOP|ENAMETOOLONG|EPERM|\.s\.PGSQL|\/etc\/|\/tmp\b|\/var\/|passwd|no such file|not a directory|permission denied/i;

type Api = (method: string, path: string, body?: unknown) => Promise<{ status: number; json: any; text: string; requestId: string | null }>;
function apiFor(hubUrl: string, token: string): Api {
  return async (method, path, body) => {
    const r = await fetch(hubUrl + path, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await r.text();
    let json: any;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: r.status, json, text, requestId: r.headers.get('x-request-id') };
  };
}

/** A "PostgreSQL server" that answers every startup with a FATAL error whose text is `message`. */
async function hostilePg(message: string): Promise<{ server: Server; port: number }> {
  const server = createServer((sock) => {
    sock.on('error', () => {});
    let buf = Buffer.alloc(0);
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 8 && buf.length >= buf.readInt32BE(0)) {
        const len = buf.readInt32BE(0);
        const code = buf.readInt32BE(4);
        buf = buf.subarray(len);
        if (code === 80877103 || code === 80877104) {
          sock.write('N'); // SSLRequest / GSSENCRequest: not supported
          continue;
        }
        const field = (t: string, v: string) => Buffer.concat([Buffer.from(t), Buffer.from(v, 'utf8'), Buffer.from([0])]);
        const body = Buffer.concat([field('S', 'FATAL'), field('V', 'FATAL'), field('C', '28000'), field('M', message), Buffer.from([0])]);
        const head = Buffer.alloc(5);
        head.write('E');
        head.writeInt32BE(body.length + 4, 1);
        sock.end(Buffer.concat([head, body]));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as { port: number }).port };
}

function expectRefusal(r: { status: number; json: any; text: string; requestId: string | null }, url: string, label: string): string {
  const why = `${label}: ${r.status} ${r.text.slice(0, 300)}`;
  expect(r.status, why).toBe(400);
  expect(Object.keys(r.json ?? {}), why).toEqual(['error']);
  // details, when present, only name the refused field (details.fields), as the message does
  const keys = Object.keys(r.json.error).sort();
  expect(keys, why).toEqual(keys.includes('details') ? ['code', 'details', 'message', 'requestId'] : ['code', 'message', 'requestId']);
  if (keys.includes('details'))
    expect(
      r.json.error.details.fields.map((f: { field: string }) => f.field),
      why,
    ).toEqual(['dbUrl']);
  expect(r.json.error.code, why).toBe('BAD_REQUEST');
  expect(r.json.error.requestId, why).toBe(r.requestId);
  // everything the refusal says is checked: the message and any details
  const msg: string = r.json.error.message + (keys.includes('details') ? '\n' + JSON.stringify(r.json.error.details) : '');
  expect(msg, why).not.toMatch(CONTROL);
  expect(msg, why).not.toContain(PW);
  expect(msg, why).not.toMatch(FS_FACTS);
  if (url.length > 12) expect(msg, why).not.toContain(url);
  return msg;
}

/** Names that the machine's hosts file maps to a loopback address (resolved, not spelled, as loopback). */
function loopbackNamesFromHostsFile(): string[] {
  let text = '';
  try {
    text = readFileSync('/etc/hosts', 'utf8');
  } catch {
    return [];
  }
  const names = new Set<string>();
  for (const line of text.split('\n')) {
    const [addr, ...hosts] = line.replace(/#.*/, '').trim().split(/\s+/);
    if (!addr || !/^127\.|^::1$/.test(addr)) continue;
    for (const h of hosts) if (/^[a-z0-9][a-z0-9-]*(\.[a-z0-9-]+)*$/i.test(h) && !/localhost|^ip6-/i.test(h)) names.add(h.toLowerCase());
  }
  return [...names].slice(0, 3);
}

describe('security: connection URLs (issue 12 finding 4)', () => {
  let db: Awaited<ReturnType<typeof createTestDatabase>>;
  let evilPg: { server: Server; port: number };
  let hub: Awaited<ReturnType<typeof startHub>>;
  let api: Api;
  let token: string;
  const procs: Proc[] = [];
  const base = '/api/projects/netsec/envs/dev/connections';
  const tally = { refusedAtSave: 0, allowedSaved: 0, allowedConnected: 0, refusedAtUse: 0, escStripped: 0 };

  beforeAll(async () => {
    db = await createTestDatabase('connsec');
    evilPg = await hostilePg(EVIL);
    // the operator allows exactly the test PostgreSQL's port and the hostile server, and a name
    hub = await startHub({ env: { STK_CONNECTION_ALLOW_HOSTS: `${PG.hostname}:${PG_PORT},127.0.0.1:${evilPg.port},localhost:${PG_PORT}` } });
    procs.push(hub);
    token = await loginToken(hub.url, TEST_OWNER.email, TEST_OWNER.password);
    api = apiFor(hub.url, token);
    expect((await api('POST', '/api/projects', { name: 'netsec' })).status).toBe(201);
    expect((await api('POST', '/api/projects/netsec/envs', { name: 'dev' })).status).toBe(201);
  }, 120_000);

  afterAll(async () => {
    for (const p of procs.reverse()) await p.stop().catch(() => {});
    evilPg?.server.close();
    await db?.drop();
    console.log(
      `[security] connection URLs: ${tally.refusedAtSave} refused when saved (400 envelope, clean message, no secret, no filesystem fact), ` +
        `${tally.allowedSaved} allowed saved / ${tally.allowedConnected} connected, ${tally.refusedAtUse} refused when used (test, apply, Bridge, resolved names), ` +
        `${tally.escStripped} outputs carrying a hostile server's escapes cleaned (envelope, CLI)`,
    );
  });

  it('refuses sockets, odd hosts, loopback / link-local / metadata in every spelling, odd params and control characters when saved', async () => {
    const u = `u:${PW}`;
    const corpus: Array<[string, string]> = [
      // unix sockets and paths: the reported attack (the test PostgreSQL's own socket, trust auth) and the probe
      ['socket of the test PostgreSQL', `postgres://postgres@${encodeURIComponent(SOCKET_DIR)}:${PG_PORT}/postgres`],
      ['socket, lower-case encoding', `postgres://postgres@${encodeURIComponent(SOCKET_DIR).replace(/%2F/g, '%2f')}:${PG_PORT}/postgres`],
      ['filesystem probe', `postgres://${u}@%2Fetc%2Fpasswd/postgres`],
      ['filesystem probe 2', `postgres://${u}@%2Fetc%2Fpasswd%2Fx:5432/db`],
      ['double-encoded socket', `postgres://${u}@%252Ftmp/db`],
      ['host= param socket', `postgres://${u}@db.example.com/db?host=${SOCKET_DIR}`],
      ['host= param encoded', `postgres://${u}@db.example.com/db?host=%2Ftmp`],
      ['host= without authority host', `postgres:///postgres?host=${SOCKET_DIR}&user=postgres`],
      ['hostaddr param', `postgres://${u}@db.example.com/db?hostaddr=127.0.0.1`],
      ['port + host params', `postgres://${u}@db.example.com/db?port=${PG_PORT}&host=/tmp`],
      ['HOST param (case)', `postgres://${u}@db.example.com/db?HOST=/tmp`],
      ['socket: scheme', `socket://postgres@${SOCKET_DIR}?db=postgres`],
      ['path-only URL', `postgres://${u}@/tmp/db`],
      ['empty host', `postgres://${u}@:5432/db`],
      ['file scheme', 'file:///etc/passwd'],
      ['http scheme', `http://${u}@db.example.com/db`],
      ['sslrootcert reads a file', `postgres://${u}@db.example.com/db?sslmode=verify-ca&sslrootcert=/etc/passwd`],
      ['sslkey reads a file', `postgres://${u}@db.example.com/db?sslkey=/etc/shadow`],
      ['options param', `postgres://${u}@db.example.com/db?options=-c%20log_statement%3Dall`],
      ['replication param', `postgres://${u}@db.example.com/db?replication=database`],
      ['duplicate sslmode', `postgres://${u}@db.example.com/db?sslmode=disable&sslmode=verify-full`],
      ['bogus sslmode', `postgres://${u}@db.example.com/db?sslmode=yes`],
      ['uselibpqcompat param', `postgres://${u}@db.example.com/db?uselibpqcompat=true`],
      ['NUL in user (startup packet)', `postgres://u%00options%00-c:${PW}@db.example.com/db`],
      ['NUL in database', `postgres://${u}@db.example.com/db%00user%00postgres`],
      ['ESC in application_name', `postgres://${u}@db.example.com/db?application_name=%1b[31m`],
      ['no user', `postgres://db.example.com:5432/db`],
      ['port 0', `postgres://${u}@db.example.com:0/db`],
      ['port too big', `postgres://${u}@db.example.com:65536/db`],
      // loopback and "this host", every spelling (port 5432: the allowed entry is the test port only)
      ['127.0.0.1 (other port)', `postgres://${u}@127.0.0.1:5432/db`],
      ['127.0.0.2', `postgres://${u}@127.0.0.2:${PG_PORT}/db`],
      ['127.255.255.254', `postgres://${u}@127.255.255.254/db`],
      ['0.0.0.0', `postgres://${u}@0.0.0.0:${PG_PORT}/db`],
      ['0', `postgres://${u}@0:${PG_PORT}/db`],
      ['decimal 2130706433', `postgres://${u}@2130706433:${PG_PORT}/db`],
      ['octal 017700000001', `postgres://${u}@017700000001/db`],
      ['hex 0x7f000001', `postgres://${u}@0x7f000001/db`],
      ['hex dotted 0x7f.0.0.1', `postgres://${u}@0x7f.0.0.1/db`],
      ['octal dotted 0177.0.0.1', `postgres://${u}@0177.0.0.1/db`],
      ['short 127.1', `postgres://${u}@127.1:${PG_PORT}/db`],
      ['short 127.0.1', `postgres://${u}@127.0.1/db`],
      ['zero-padded 127.000.000.001', `postgres://${u}@127.000.000.001/db`],
      ['[::1]', `postgres://${u}@[::1]:${PG_PORT}/db`],
      ['[0:0:0:0:0:0:0:1]', `postgres://${u}@[0:0:0:0:0:0:0:1]/db`],
      ['[0000::1]', `postgres://${u}@[0000::1]/db`],
      ['[::]', `postgres://${u}@[::]:${PG_PORT}/db`],
      ['[::ffff:127.0.0.1] (other port)', `postgres://${u}@[::ffff:127.0.0.1]:5432/db`],
      ['[::ffff:7f00:2]', `postgres://${u}@[::ffff:7f00:2]/db`],
      ['[::127.0.0.1] (compatible)', `postgres://${u}@[::127.0.0.1]/db`],
      ['[::ffff:0:127.0.0.1] (SIIT)', `postgres://${u}@[::ffff:0:127.0.0.1]/db`],
      ['[64:ff9b::127.0.0.1] (NAT64)', `postgres://${u}@[64:ff9b::127.0.0.1]/db`],
      ['[2002:7f00:1::] (6to4)', `postgres://${u}@[2002:7f00:1::]/db`],
      ['Teredo of 127.0.0.1', `postgres://${u}@[2001:0:4136:e378:8000:63bf:80ff:fffe]/db`],
      ['localhost (other port)', `postgres://${u}@localhost:5432/db`],
      ['LOCALHOST.', `postgres://${u}@LOCALHOST.:5432/db`],
      ['sub.localhost', `postgres://${u}@db.localhost:${PG_PORT}/db`],
      ['ip6-localhost', `postgres://${u}@ip6-localhost/db`],
      ['localhost.localdomain', `postgres://${u}@localhost.localdomain/db`],
      // link-local and cloud metadata
      ['169.254.169.254', `postgres://${u}@169.254.169.254:80/db`],
      ['169.254.170.2 (ECS)', `postgres://${u}@169.254.170.2/db`],
      ['decimal 2852039166', `postgres://${u}@2852039166/db`],
      ['hex 0xa9fea9fe', `postgres://${u}@0xa9fea9fe/db`],
      ['octal 0251.0376.0251.0376', `postgres://${u}@0251.0376.0251.0376/db`],
      ['short 169.254.43518', `postgres://${u}@169.254.43518/db`],
      ['[::ffff:169.254.169.254]', `postgres://${u}@[::ffff:169.254.169.254]/db`],
      ['[::ffff:a9fe:a9fe]', `postgres://${u}@[::ffff:a9fe:a9fe]/db`],
      ['[64:ff9b::a9fe:a9fe]', `postgres://${u}@[64:ff9b::a9fe:a9fe]/db`],
      ['[fd00:ec2::254] (AWS IPv6)', `postgres://${u}@[fd00:ec2::254]/db`],
      ['[fe80::1]', `postgres://${u}@[fe80::1]/db`],
      ['metadata.google.internal', `postgres://${u}@metadata.google.internal/db`],
      ['METADATA.GOOGLE.INTERNAL.', `postgres://${u}@METADATA.GOOGLE.INTERNAL./db`],
      ['metadata', `postgres://${u}@metadata/db`],
      ['instance-data', `postgres://${u}@instance-data/db`],
      ['100.100.100.200 (Alibaba)', `postgres://${u}@100.100.100.200/db`],
      ['224.0.0.1 multicast', `postgres://${u}@224.0.0.1/db`],
      ['255.255.255.255', `postgres://${u}@255.255.255.255/db`],
      ['[ff02::1]', `postgres://${u}@[ff02::1]/db`],
      // userinfo tricks: the host is what follows the last @
      ['@ in userinfo → loopback', `postgres://u@db.example.com@127.0.0.1:5432/db`],
      ['backslash before @', `postgres://${u}@db.example.com\\@127.0.0.1:5432/db`],
      ['encoded @ in host', `postgres://${u}@127.0.0.1%40db.example.com/db`],
      ['encoded : in host', `postgres://${u}@db.example.com%3A5432/db`],
      ['fullwidth digits', `postgres://${u}@１２７.０.０.１/db`],
      ['circled letters', `postgres://${u}@ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/db`],
      ['wildcard host', `postgres://${u}@*/db`],
      ['empty label', `postgres://${u}@db..example.com/db`],
      // IPv6 zones
      ['[fe80::1%25eth0]', `postgres://${u}@[fe80::1%25eth0]/db`],
      ['[::1%25lo]', `postgres://${u}@[::1%25lo]:${PG_PORT}/db`],
      ['[fe80::1%eth0]', `postgres://${u}@[fe80::1%eth0]/db`],
      // very long input
      ['64-character label', `postgres://${u}@${'a'.repeat(64)}.example.com/db`],
      ['254-character host', `postgres://${u}@${Array.from({ length: 51 }, () => 'abcd').join('.')}/db`],
      ['URL over 2048 characters', `postgres://${u}@db.example.com/${'d'.repeat(2100)}`],
      ['100 KB URL', `postgres://${u}@db.example.com/db?application_name=${'x'.repeat(100_000)}`],
      // control characters
      ['ESC in host', `postgres://${u}@db\u001b[31m.example.com/db`],
      ['NUL in host', `postgres://${u}@db\u0000.example.com/db`],
      ['newline', `postgres://${u}@db.example.com/db\nx`],
      ['tab in host', `postgres://${u}@db\t.example.com/db`],
      ['DEL', `postgres://${u}@db.example.com/d\u007fb`],
      ['C1 CSI', `postgres://${u}@db.example.com/d\u009b31mb`],
    ];
    const seen: string[] = [];
    for (const [label, url] of corpus) {
      const r = await api('PUT', `${base}/probe`, { engine: 'postgres', dbUrl: url });
      seen.push(`${label} → ${expectRefusal(r, url, label)}`);
      tally.refusedAtSave++;
    }
    // the refused socket and metadata forms name why (not just "invalid")
    expect(seen.find((s) => s.startsWith('socket of the test PostgreSQL'))).toMatch(/unix sockets/);
    expect(seen.find((s) => s.startsWith('169.254.169.254'))).toMatch(/link-local/);
    expect(seen.find((s) => s.startsWith('decimal 2130706433'))).toMatch(/non-standard form/);
    // nothing was stored
    const list = await api('GET', base);
    expect(list.status).toBe(200);
    expect(list.json.items).toEqual([]);
  });

  it('accepts remote hosts and the hosts the operator allowed; the allowed ones really connect', async () => {
    const dbName = db.name;
    const accepted: Array<[string, string, boolean]> = [
      // [label, url, connect and SELECT 1?]
      ['allowed test PostgreSQL', `postgres://postgres:${PW}@${PG.hostname}:${PG_PORT}/${dbName}`, true],
      ['allowed by name (localhost:port)', `postgres://postgres:${PW}@localhost:${PG_PORT}/${dbName}`, true],
      ['allowed address, IPv4-mapped spelling', `postgres://postgres:${PW}@[::ffff:${PG.hostname}]:${PG_PORT}/${dbName}`, false],
      ['public name', `postgres://app:${PW}@db.example.com:5432/shop?sslmode=verify-full`, false],
      ['private 10/8', `postgres://app:${PW}@10.1.2.3/shop`, false],
      ['private 192.168/16', `postgres://app:${PW}@192.168.10.20:6432/shop?application_name=svc`, false],
      ['private 172.16/12', `postgres://app:${PW}@172.16.0.9/shop`, false],
      ['docker service name', `postgres://app:${PW}@db_1:5432/shop`, false],
      ['IPv6 documentation address', `postgres://app:${PW}@[2001:db8::1]:5432/shop`, false],
      ['ULA IPv6', `postgres://app:${PW}@[fd12:3456::1]/shop`, false],
      ['trailing-dot FQDN', `postgresql://app:${PW}@db.example.com./shop`, false],
    ];
    for (const [label, url, connect] of accepted) {
      const saved = await api('PUT', `${base}/probe`, { engine: 'postgres', dbUrl: url });
      expect(saved.status, `${label}: ${saved.text}`).toBe(200);
      expect(saved.text).not.toContain(PW);
      tally.allowedSaved++;
      if (connect) {
        const t = await api('POST', `${base}/probe/test`);
        expect(t.status, `${label}: ${t.text}`).toBe(200);
        expect(t.json.ok).toBe(true);
        tally.allowedConnected++;
      }
    }
  });

  it("a database server's error text reaches the envelope and the CLI without its escape sequences", async () => {
    const url = `postgres://app:${PW}@127.0.0.1:${evilPg.port}/db`;
    expect((await api('PUT', `${base}/evil`, { engine: 'postgres', dbUrl: url })).status).toBe(200);
    const r = await api('POST', `${base}/evil/test`);
    const msg = expectRefusal(r, url, 'hostile server');
    expect(msg).toContain('does not exist');
    expect(msg).toContain('SQLSTATE 28000');
    // eslint-disable-next-line no-control-regex -- the escapes a hostile server sent must be gone
    expect(msg).not.toMatch(/\u001b|\u0007|\u009b|\r/);
    tally.escStripped++;
    const cfg = tempConfigDir();
    const cli = await runStk(['connections', 'test', '--project', 'netsec', '--env', 'dev', '--name', 'evil'], {
      env: { STK_CONFIG_DIR: cfg, STK_HUB_URL: hub.url, STK_AUTH_TOKEN: token },
    });
    expect(cli.code, cli.output).toBe(1);
    expect(cli.stderr).toContain('does not exist');
    expect(cli.output).not.toMatch(CONTROL);
    expect(cli.output).not.toContain(PW);
    tally.escStripped++;
  });

  it('the CLI strips escape sequences from whatever a Hub sends (messages and table cells)', async () => {
    const fake: HttpServer = createHttpServer((req, res) => {
      res.setHeader('content-type', 'application/json');
      if (req.method === 'GET') {
        res.end(
          JSON.stringify({
            items: [
              {
                name: `main\u001b]0;title\u0007\u001b[2J`,
                engine: 'postgres',
                url: `postgres://x@\u001b[31mhost\u001b[0m:5432/db\r\nFAKE`,
                createdAt: new Date().toISOString(),
                updatedAt: new Date().toISOString(),
              },
            ],
          }),
        );
        return;
      }
      res.statusCode = 400;
      res.end(JSON.stringify({ error: { code: 'BAD_REQUEST', message: `connection main failed: ${EVIL}`, requestId: 'r1' } }));
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    try {
      const fakeUrl = `http://127.0.0.1:${(fake.address() as { port: number }).port}`;
      const env = { STK_CONFIG_DIR: tempConfigDir(), STK_HUB_URL: fakeUrl, STK_AUTH_TOKEN: 'tok-xxxxxxxxxxxxxxxx' };
      const t = await runStk(['connections', 'test', '--project', 'p', '--env', 'e'], { env });
      expect(t.code, t.output).toBe(1);
      expect(t.stderr).toMatch(/Error: connection main failed: role "x" does not exist/);
      expect(t.output).not.toMatch(CONTROL);
      const l = await runStk(['connections', 'list', '--project', 'p', '--env', 'e'], { env });
      expect(l.code, l.output).toBe(0);
      expect(l.stdout).toContain('main');
      expect(l.stdout.trimEnd().split('\n')).toHaveLength(1); // one row: the CR/LF in a cell did not add a line
      expect(l.output).not.toMatch(CONTROL);
      tally.escStripped += 2;
    } finally {
      fake.close();
    }
  });

  it('a URL saved while allowed is refused when used once it is not: connections test, apply and the Bridge', async () => {
    const url = `postgres://postgres:${PW}@${PG.hostname}:${PG_PORT}/${db.name}`;
    expect((await api('PUT', `${base}/main`, { engine: 'postgres', dbUrl: url })).status).toBe(200);
    const cfg = tempConfigDir();
    const stk = (h: string, args: string[]) => runStk(args, { env: { STK_CONFIG_DIR: cfg, STK_HUB_URL: h, STK_AUTH_TOKEN: token } });
    const applied = await stk(hub.url, ['apply', '--project', 'netsec', '--env', 'dev', '--dir', EXAMPLE_DIR]);
    expect(applied.code, applied.output).toBe(0);
    const key = await api('POST', '/api/projects/netsec/envs/dev/apikeys', { name: 'reader', roles: ['reader'] });
    expect(key.status).toBe(201);
    const apiKey = rememberSecret('api-key', key.json.apiKey as string);

    // the operator narrows the list: the same store, nothing allowed
    await hub.stop();
    const narrow = await startHub({ dbUrl: hub.dbUrl, secretKey: hub.secretKey, serviceToken: hub.serviceToken, env: { STK_CONNECTION_ALLOW_HOSTS: '' } });
    procs.push(narrow);
    token = await loginToken(narrow.url, TEST_OWNER.email, TEST_OWNER.password);
    api = apiFor(narrow.url, token);

    const t = await api('POST', `${base}/main/test`);
    expect(expectRefusal(t, url, 'test after narrowing')).toMatch(/not allowed: it is a loopback address.*STK_CONNECTION_ALLOW_HOSTS/);
    tally.refusedAtUse++;

    const again = await stk(narrow.url, ['apply', '--project', 'netsec', '--env', 'dev', '--dir', EXAMPLE_DIR]);
    expect(again.code, again.output).toBe(1);
    expect(again.stderr).toMatch(/cannot connect to the database of connection "main": dbUrl host .* is not allowed/);
    expect(again.output).not.toContain(PW);
    tally.refusedAtUse++;

    // a Bridge that allows nothing refuses the URL it is sent; one that allows the test PostgreSQL serves
    const call = (b: Proc) =>
      fetch(`${b.url}/call`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-santokit-api-key': apiKey },
        body: JSON.stringify({ path: 'db/users/select', params: { limit: 1 } }),
      });
    const strict = await startBridge({ hubUrl: narrow.url, serviceToken: narrow.serviceToken, env: { STK_CONNECTION_ALLOW_HOSTS: '' } });
    procs.push(strict);
    const open = await startBridge({ hubUrl: narrow.url, serviceToken: narrow.serviceToken, env: { STK_CONNECTION_ALLOW_HOSTS: TEST_ALLOW_HOSTS } });
    procs.push(open);
    await waitFor(async () => (await call(open)).status === 200, 30_000, 'the allowing Bridge serves');
    await waitFor(async () => strict.logs().includes('connection URL rejected'), 30_000, 'the strict Bridge got the release');
    const refused = await call(strict);
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as any).error.code).toBe('SERVICE_UNAVAILABLE');
    expect(strict.logs()).toMatch(/"reason":"connection URL refused: dbUrl host [^"]+ is not allowed: it is a loopback address/);
    expect(strict.logs()).not.toContain(PW);
    tally.refusedAtUse++;
  });

  it('a host name is checked by what it resolves to, when connecting (hosts file names; a re-pointed name)', async () => {
    // names the hosts file maps to loopback are not loopback by their spelling: saved, refused when used
    for (const name of loopbackNamesFromHostsFile()) {
      const url = `postgres://postgres:${PW}@${name}:${PG_PORT}/${db.name}`;
      const saved = await api('PUT', `${base}/named`, { engine: 'postgres', dbUrl: url });
      expect(saved.status, saved.text).toBe(200);
      const t = await api('POST', `${base}/named/test`);
      expect(expectRefusal(t, url, `${name} → loopback`)).toMatch(/resolves to a loopback address/);
      tally.refusedAtUse++;
    }
    // DNS rebinding: the name first resolves to the allowed test PostgreSQL, then to the metadata
    // address; every connect resolves again and connects only to an address that passed the check
    const pg = (await import('pg')).default;
    const { parseDbUrl, pgConnectionConfig, HostPolicy } = await import('../../src/common/db-url.js');
    const allow = HostPolicy.parse(`${PG.hostname}:${PG_PORT}`);
    const answers = [[PG.hostname], ['169.254.169.254'], ['10.0.0.7', '127.0.0.2']];
    let n = 0;
    const rebinding = async () => answers[Math.min(n++, answers.length - 1)]!.map((address) => ({ address, family: 4 }));
    const target = parseDbUrl(`postgres://postgres:${PW}@db.rebind.test:${PG_PORT}/${db.name}`);
    const outcomes: string[] = [];
    for (let i = 0; i < answers.length; i++) {
      const c = new pg.Client({ ...pgConnectionConfig(target, allow, rebinding), connectionTimeoutMillis: 3000 });
      c.on('error', () => {});
      try {
        await c.connect();
        outcomes.push(`connected to ${(await c.query('SELECT inet_server_addr()::text AS a')).rows[0].a}`);
      } catch (e) {
        outcomes.push(`refused: ${(e as Error).message}`);
      } finally {
        await c.end().catch(() => {});
      }
    }
    expect(outcomes[0]).toMatch(new RegExp(`^connected to ${PG.hostname.replace(/\./g, '\\.')}`));
    expect(outcomes[1]).toMatch(/^refused: dbUrl host db\.rebind\.test:\d+ is not allowed: it resolves to a link-local address/);
    expect(outcomes[2]).toMatch(/^refused: .*resolves to a loopback address/); // one refused address refuses the name
    tally.refusedAtUse += 2;
  });
});
