/**
 * Route-table sweep: every route the Hub and the Bridge register (read from the apps themselves, so
 * a route added later is swept without a new test) is sent with every identity — none, garbage, the
 * service token, an API key, the org owner, an org admin, an org member, a project admin, a deployer,
 * a viewer and the admin of another project — and each outcome is checked against the route's
 * declared `auth` (the project named where the route reads it: path, `?project=` or the JSON body); to
 * an operator without any role on the project it reads like a project that does not exist (the same
 * 403, checked against a name nobody created). Then each route is sent again under encoded spellings of its path (a
 * percent-encoded letter, `%2F`, absolute-form, `//`, `/./`, `/x/../`, encoded dots, trailing `/`,
 * `;`): a spelling that means the same path gets exactly the canonical answer, a refused spelling
 * gets 400, and no spelling ever gets further than the canonical request with the same identity.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildHub } from '../../src/hub/app.js';
import { loadHubConfig } from '../../src/hub/config.js';
import { buildBridge } from '../../src/bridge/app.js';
import { loadBridgeConfig } from '../../src/bridge/config.js';
import { ORG_ROLE_RANK as ORG_RANK, PROJECT_ROLE_RANK, type OrgRole, type ProjectRole } from '../../src/protocol/names.js';
import type { RouteAuth, RouteInfo } from '../../src/protocol/route-auth.js';
import { startStack, type KeyInfo, type Stack } from '../helpers/fuzz-stack.js';
import { loginToken } from '../helpers/cli.js';
import { TEST_OWNER } from '../helpers/procs.js';
import { rawRequest, type RawResponse } from '../helpers/raw-http.js';
import { rememberSecret } from '../helpers/secrets.js';

const PW: string = rememberSecret('password', 'sweep-password-1');

type IdName = 'none' | 'garbage' | 'service' | 'apikey' | 'owner' | 'orgAdmin' | 'orgMember' | 'projectAdmin' | 'deployer' | 'viewer' | 'otherAdmin';
interface Identity {
  name: IdName;
  /** operator identities: org role and effective role on the swept project */
  org?: OrgRole;
  project?: ProjectRole | null;
  email?: string;
  headers: () => Promise<Record<string, string>>;
}

/**
 * What the declared auth lets this identity do: refused with 401, with 403 ('unseen': 403 to an operator
 * without any role on the project, exactly as for a name nobody created), or let through.
 */
function expected(auth: RouteAuth, id: Identity): 401 | 403 | 'unseen' | 'pass' | 'same-as-none' {
  const operator = id.org !== undefined;
  switch (auth.kind) {
    case 'public':
      return 'same-as-none';
    case 'service':
      return id.name === 'service' ? 'pass' : 401;
    case 'apikey':
      return id.name === 'apikey' ? 'pass' : 401;
    case 'leakToken':
      // no swept identity holds a leak-report token (test/integration/apikeys-leaks.test.ts has them)
      return 401;
    case 'operator':
      return operator ? 'pass' : 401;
    case 'org':
      if (!operator) return 401;
      return ORG_RANK[id.org!] >= ORG_RANK[auth.role] ? 'pass' : 403;
    case 'project':
      if (!operator) return 401;
      if (auth.orOrg && ORG_RANK[id.org!] >= ORG_RANK[auth.orOrg]) return 'pass';
      // the sweep names the swept project where the route reads it: path, ?project= or the body;
      // an org member with no role on it is answered as for a project that does not exist
      if (!id.project) return 'unseen';
      return PROJECT_ROLE_RANK[id.project] >= PROJECT_ROLE_RANK[auth.role] ? 'pass' : 403;
  }
}

async function routeTables(): Promise<{ hub: RouteInfo[]; bridge: RouteInfo[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'stk-sweep-'));
  const { app: hub } = await buildHub(
    loadHubConfig({ STK_SECRET_KEY: 'a'.repeat(64), STK_SERVICE_TOKEN: 'sweep-token-xxxxxxxx', STK_HUB_DB_URL: `sqlite://${join(dir, 'hub.db')}` }),
    { logger: false },
  );
  await hub.ready();
  const { app: bridge } = await buildBridge(loadBridgeConfig({ STK_SERVICE_TOKEN: 'sweep-token-xxxxxxxx', STK_HUB_URL: 'http://127.0.0.1:9' }), {
    logger: false,
  });
  await bridge.ready();
  const out = { hub: [...hub.routeTable], bridge: [...bridge.routeTable] };
  await hub.close();
  await bridge.close();
  return out;
}

describe('security: route-table sweep', () => {
  let s: Stack;
  let key: KeyInfo;
  let tables: { hub: RouteInfo[]; bridge: RouteInfo[] };
  const ids: Identity[] = [];
  const counts = { routes: 0, requests: 0, variants: 0 };

  beforeAll(async () => {
    tables = await routeTables();
    s = await startStack({ bridges: 1 });
    key = await s.createKey('sweep-key', ['reader']);
    const must = async (r: Promise<{ status: number; text: string }>, status = 201) => {
      const x = await r;
      expect(x.status, x.text).toBe(status);
      return x as { status: number; text: string; json: any };
    };
    await must(s.api('POST', '/api/projects', { name: 'other' }));
    const join = async (email: string, role: string, project?: string) => {
      const inv = await must(s.api('POST', project ? `/api/projects/${project}/invites` : '/api/org/invites', { email, role }));
      const code = rememberSecret('invite-code', inv.json.inviteCode);
      await must(s.api('POST', '/api/invites/accept', { email, code, password: PW }, null), 200);
      return email;
    };
    const session =
      (email: string, password = PW) =>
      async () => ({ authorization: `Bearer ${await loginToken(s.hub.url, email, password)}` });
    const fixed = (h: Record<string, string>) => async () => h;
    const op = async (name: IdName, org: OrgRole, project: ProjectRole | null, email: string, password = PW) => {
      const token = await loginToken(s.hub.url, email, password);
      ids.push({ name, org, project, email, headers: fixed({ authorization: `Bearer ${token}` }) });
      // logout ends the session it is sent with: it gets a fresh one each time
      logoutSession[name] = session(email, password);
    };
    ids.push({ name: 'none', headers: fixed({}) });
    ids.push({
      name: 'garbage',
      headers: fixed({ authorization: 'Bearer stks_garbage', 'x-santokit-service-token': 'garbage', 'x-santokit-api-key': 'stk_garbage' }),
    });
    ids.push({ name: 'service', headers: fixed({ 'x-santokit-service-token': s.hub.serviceToken }) });
    ids.push({ name: 'apikey', headers: fixed({ 'x-santokit-api-key': key.key }) });
    await op('owner', 'owner', 'admin', TEST_OWNER.email, TEST_OWNER.password);
    await op('orgAdmin', 'admin', 'admin', await join('sweep-orgadmin@example.com', 'admin'));
    await op('orgMember', 'member', null, await join('sweep-member@example.com', 'member'));
    await op('projectAdmin', 'member', 'admin', await join('sweep-padmin@example.com', 'admin', s.project));
    await op('deployer', 'member', 'deployer', await join('sweep-deployer@example.com', 'deployer', s.project));
    await op('viewer', 'member', 'viewer', await join('sweep-viewer@example.com', 'viewer', s.project));
    await op('otherAdmin', 'member', null, await join('sweep-otheradmin@example.com', 'admin', 'other'));
  }, 180_000);
  afterAll(async () => {
    await s?.stop();
    console.log(
      `[security] route sweep: ${counts.routes} routes, ${counts.requests} identity requests, ${counts.variants} encoded-path requests, 0 unexpected outcomes`,
    );
  });

  const logoutSession: Partial<Record<IdName, () => Promise<Record<string, string>>>> = {};

  /** A concrete path for a route: real project/env, and names of things that do not exist (no side effects). */
  function concrete(url: string, project = s.project): string {
    const real: Record<string, string> = {
      project,
      env: s.env,
      key: 'key_01SWEEPNOSUCHKEY0000000000',
      name: 'nosuch',
      email: 'nobody@example.com',
      releaseId: 'rel_nosuch',
      token: 'nosuch',
      file: 'swagger-ui.css',
      webhook: 'wh_nosuch',
    };
    return url.replace(/:([A-Za-z]+)/g, (_m, p: string) => {
      if (!(p in real)) throw new Error(`route param :${p} has no sweep value: add one`);
      return real[p]!;
    });
  }

  async function send(base: string, r: RouteInfo, target: string, id: Identity, project = s.project): Promise<RawResponse> {
    const withBody = r.method === 'POST' || r.method === 'PUT' || r.method === 'PATCH';
    const h = r.method === 'POST' && r.url === '/api/auth/logout' && logoutSession[id.name] ? await logoutSession[id.name]!() : await id.headers();
    // routes that read the project from the query or the body get the swept project there (and nothing
    // else the route needs, so a request that gets through its auth is refused by validation: no side effects)
    const from = r.auth.kind === 'project' ? r.auth.from : undefined;
    const url = from === 'query' ? `${target}${target.includes('?') ? '&' : '?'}project=${encodeURIComponent(project)}` : target;
    const body = from === 'body' ? JSON.stringify({ project }) : '{}';
    const res = await rawRequest(base, r.method, url, { ...h, ...(withBody ? { 'content-type': 'application/json' } : {}) }, withBody ? body : undefined, {
      maxBody: 64 * 1024,
    });
    return res;
  }

  const describeOutcome = (r: RouteInfo, target: string, id: Identity, res: RawResponse) =>
    `${r.method} ${target} as ${id.name} (declared ${JSON.stringify(r.auth)}) → ${res.status} ${res.body.slice(0, 200)}`;

  function check(r: RouteInfo, target: string, id: Identity, res: RawResponse, noneStatus: number): void {
    const what = describeOutcome(r, target, id, res);
    // a Bridge's /readyz answers 503 until it is ready: an answer, not a failure
    if (!(r.url === '/readyz' && res.status === 503)) expect(res.status, what).toBeLessThan(500);
    if (res.status >= 400 && res.status !== 503) expect(res.json?.error?.requestId, what).toBeTypeOf('string');
    const e = expected(r.auth, id);
    if (e === 'same-as-none') expect(res.status, what).toBe(noneStatus);
    else if (e === 'pass') expect([401, 403], what).not.toContain(res.status);
    else expect(res.status, what).toBe(e === 'unseen' ? 403 : e);
  }

  /** Destructive-if-allowed routes go last (a logout ends a session; the sweep's own are fresh). */
  const ordered = (t: RouteInfo[]) => [...t].filter((r) => r.method !== 'HEAD').sort((a, b) => Number(a.method === 'DELETE') - Number(b.method === 'DELETE'));

  for (const app of ['hub', 'bridge'] as const) {
    it(`${app}: every route declares its auth, and every identity gets what the declaration says`, async () => {
      const base = app === 'hub' ? s.hub.url : s.bridges[0]!.url;
      const table = ordered(tables[app]);
      expect(table.length).toBeGreaterThan(app === 'hub' ? 30 : 3);
      for (const r of table) {
        counts.routes++;
        const target = concrete(r.url);
        const none = await send(base, r, target, ids[0]!);
        for (const id of ids) {
          const res = id.name === 'none' ? none : await send(base, r, target, id);
          counts.requests++;
          check(r, target, id, res, none.status);
          if (expected(r.auth, id) === 'unseen') {
            // the same request naming a project nobody created: the same answer, name for name
            const ghost = 'sweep-no-such-project';
            const g = await send(base, r, concrete(r.url, ghost), id, ghost);
            counts.requests++;
            const what = describeOutcome(r, concrete(r.url, ghost), id, g);
            expect(g.status, what).toBe(res.status);
            expect(g.json?.error?.code, what).toBe(res.json?.error?.code);
            expect(g.json?.error?.message.replace(ghost, '<name>'), what).toBe(res.json?.error?.message.replace(s.project, '<name>'));
          }
        }
      }
    }, 300_000);

    it(`${app}: no spelling of a path gets further than the path itself`, async () => {
      const base = app === 'hub' ? s.hub.url : s.bridges[0]!.url;
      const table = ordered(tables[app]);
      // the identity with the least and the one with the most the route allows
      const strongest = (auth: RouteAuth): Identity => ids.find((i) => expected(auth, i) === 'pass') ?? ids[0]!;
      for (const r of table) {
        const path = concrete(r.url);
        const segs = path.split('/').slice(1);
        const encLetter = (seg: number) => {
          const parts = [...segs];
          const p = parts[seg]!;
          const i = p.search(/[a-z]/i);
          if (i < 0) return null;
          parts[seg] = p.slice(0, i) + '%' + p.charCodeAt(i).toString(16) + p.slice(i + 1);
          return '/' + parts.join('/');
        };
        const same = [
          encLetter(0),
          encLetter(segs.length - 1),
          '/' + path,
          path.replace(/^\/([^/]+)\//, '//$1//'),
          path.replace(/^\/([^/]+)\//, '/$1/./'),
          path.replace(/^\/([^/]+)\//, '/$1/zz/../'),
          path.replace(/^\/([^/]+)\//, '/$1/zz/%2e%2e/'),
          path.replace(/^\/([^/]+)\//, '/$1/%2E/'),
        ].filter((x): x is string => x !== null && x !== path);
        const refused = [
          segs.length > 1 ? path.replace(/^\/([^/]+)\//, '/$1%2F') : null,
          `http://evil.example${path}`,
          `http://${new URL(base).host}${path}`,
          '/..' + path,
          path.replace(/^\//, '/%5C'),
        ].filter((x): x is string => x !== null);
        const noBetter = [path + '/', path + ';', path.replace(/^\/([^/]+)\//, '/$1;x/'), path + '%00', path.toUpperCase()];
        for (const id of [ids[0]!, strongest(r.auth)]) {
          const canon = await send(base, r, path, id);
          for (const v of same) {
            const res = await send(base, r, v, id);
            counts.variants++;
            expect(res.status, `${describeOutcome(r, v, id, res)} — the canonical ${path} answered ${canon.status}`).toBe(canon.status);
          }
          for (const v of refused) {
            const res = await send(base, r, v, id);
            counts.variants++;
            expect(res.status, describeOutcome(r, v, id, res)).toBe(400);
            expect(res.json?.error?.code, describeOutcome(r, v, id, res)).toBe('BAD_REQUEST');
          }
          for (const v of noBetter) {
            const res = await send(base, r, v, id);
            counts.variants++;
            const what = describeOutcome(r, v, id, res);
            if (!(r.url === '/readyz' && res.status === 503)) expect(res.status, what).toBeLessThan(500);
            if (canon.status === 401 || canon.status === 403) expect([400, 401, 403, 404, 405], what).toContain(res.status);
          }
        }
      }
    }, 300_000);
  }
});
