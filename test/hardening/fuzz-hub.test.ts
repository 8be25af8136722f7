/**
 * Fuzz the Hub API: seeded requests across every route (real and bogus names in the path, odd query
 * strings, malformed and mistyped bodies), with the owner's session, a viewer's, a garbage one, the
 * service token and none. Holds when: no response ≥ 500, every error is the envelope with a requestId,
 * and the Hub still serves the owner afterwards.
 *
 * STK_FUZZ_SEED picks another seed; STK_SOAK=1 (npm run soak) sends 10× more.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HUB_ROUTES, hubRecipes, type HubRecipe } from '../helpers/fuzz-gen.js';
import { HttpClient, Tally, startStack, type KeyInfo, type Resp, type Stack } from '../helpers/fuzz-stack.js';
import { loginToken } from '../helpers/cli.js';
import { rememberSecret } from '../helpers/secrets.js';

const SOAK = process.env.STK_SOAK === '1';
const SEED = Number(process.env.STK_FUZZ_SEED ?? 20240602);
const N = SOAK ? 30_000 : 3_000;
const VIEWER = { email: 'viewer@example.com', password: rememberSecret('password', 'viewer-password-fuzz-1') };

describe('fuzz the Hub API', () => {
  let s: Stack;
  let key: KeyInfo;
  let viewer: string;
  let releaseId: string;
  let client: HttpClient;

  beforeAll(async () => {
    s = await startStack({ bridges: 0 });
    key = await s.createKey('fuzz-key', ['reader']);
    const inv = await s.api('POST', `/api/projects/${s.project}/invites`, { email: VIEWER.email, role: 'viewer' });
    expect(inv.status, inv.text).toBe(201);
    rememberSecret('invite-code', inv.json.inviteCode);
    const acc = await s.api('POST', '/api/invites/accept', { email: VIEWER.email, code: inv.json.inviteCode, password: VIEWER.password }, null);
    expect(acc.status, acc.text).toBe(200);
    viewer = await loginToken(s.hub.url, VIEWER.email, VIEWER.password);
    const rel = await s.api('GET', `/api/projects/${s.project}/releases`);
    releaseId = rel.json.items[0].releaseId;
    client = new HttpClient(s.hub.url, 8);
  }, 120_000);
  afterAll(async () => {
    client?.close();
    await s?.stop();
  });

  function urlFor(r: HubRecipe): { method: string; url: string } {
    const [method, template] = HUB_ROUTES[r.route]!;
    let i = 0;
    const real: Record<string, string> = { p: s.project, e: s.env, c: 'main', m: VIEWER.email, k: key.keyId, r: releaseId };
    const url = template.replace(/:([a-z])/g, (_m, name: string) => {
      const seg = r.segments[i++ % r.segments.length]!;
      return seg === '$real' ? encodeURIComponent(real[name]!) : seg;
    });
    return { method, url: url + r.query };
  }

  function headersFor(r: HubRecipe, url: string): Record<string, string> {
    const h: Record<string, string> = {};
    if (r.contentType !== null && r.body.kind !== 'none') h['content-type'] = r.contentType;
    // logging the owner out would end the run's session: logouts go out with the viewer's session or none
    const session = url.startsWith('/api/auth/logout') && r.session === 'owner' ? 'garbage' : r.session;
    switch (session) {
      case 'owner':
        h.authorization = `Bearer ${s.owner}`;
        break;
      case 'viewer':
        h.authorization = `Bearer ${url.startsWith('/api/auth/logout') ? 'stks_x' : viewer}`;
        break;
      case 'garbage':
        h.authorization = 'Bearer garbage';
        break;
      case 'expired-format':
        h.authorization = `Bearer stks_${'A'.repeat(43)}`;
        break;
      case 'service':
        h['x-santokit-service-token'] = s.hub.serviceToken;
        break;
      case 'none':
        break;
    }
    return h;
  }

  it(
    `${N} seeded requests across ${HUB_ROUTES.length} routes: 0 × 5xx, every error an envelope with a requestId`,
    async () => {
      const recipes = hubRecipes(SEED, N);
      const tally = new Tally();
      const routesHit = new Set<number>();
      const t0 = Date.now();
      await client.run(recipes, async (r, i) => {
        const { method, url } = urlFor(r);
        const body = r.body.kind === 'json' ? r.body.text : r.body.kind === 'bytes' ? r.body.data : undefined;
        const what = `#${i} ${method} ${url.slice(0, 120)} session=${r.session} ct=${r.contentType} body=${r.body.kind === 'json' ? r.body.text.slice(0, 200) : r.body.kind}`;
        let res: Resp;
        try {
          res = await client.send(method, url, headersFor(r, url), body);
        } catch (e) {
          tally.fail(e, what);
          return;
        }
        routesHit.add(r.route);
        tally.add(res, what);
      });
      const secs = ((Date.now() - t0) / 1000).toFixed(1);
      console.log(
        `fuzz hub: ${tally.requests} requests over ${routesHit.size} routes (seed ${SEED}, ${secs}s), ${tally.fiveXX} × 5xx, ${tally.missingRequestId} missing requestId, ${tally.badEnvelope} bad envelopes, ${tally.transportErrors} dropped connections; statuses ${tally.statuses()}`,
      );
      if (tally.problems.length) console.log('fuzz hub problems:\n  ' + tally.problems.join('\n  '));

      expect(s.hub.child.exitCode, 'hub exited').toBeNull();
      const ready = await fetch(s.hub.url + '/readyz');
      const projects = await s.api('GET', '/api/projects');
      const audit = await s.api('GET', '/api/audit?limit=5');
      console.log(`fuzz hub: after the run /readyz ${ready.status}, project list ${projects.status}, audit ${audit.status}`);

      expect(tally.requests).toBe(N);
      expect(routesHit.size).toBe(HUB_ROUTES.length);
      expect(tally.problems, tally.problems.join('\n')).toEqual([]);
      expect(tally.fiveXX).toBe(0);
      expect(tally.missingRequestId).toBe(0);
      expect(tally.transportErrors).toBe(0);
      expect(ready.status).toBe(200);
      expect(projects.status).toBe(200);
      expect(audit.status).toBe(200);
    },
    SOAK ? 1_800_000 : 300_000,
  );
});
