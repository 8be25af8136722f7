import type { OrgRole, ProjectRole } from './names.js';

/**
 * What a route requires of its caller, declared next to the route (`config: { auth }`) and enforced
 * by one hook on what the router matched — never by looking at the URL text.
 *
 * - `public`: nothing (health, login, invite acceptance: their own body is the credential)
 * - `service`: the Hub's service token (Bridges: `/internal/*`)
 * - `operator`: any logged-in operator; the service decides the rest (e.g. lists filtered by role)
 * - `org`: at least this org role
 * - `project`: at least this role on the project named by the `:project` path parameter (or, with
 *   `from: 'query'`, by `?project=`; with `from: 'body'`, by the JSON body's `project`, checked once
 *   the body is parsed, after the session was checked before it is read); with `orOrg`, that org role
 *   is enough on its own
 * - `apikey`: a project API key (the Bridge's `/call`)
 * - `leakToken`: a leak-report token (`stk leaks token create`), the credential of secret scanners
 *   reporting leaked keys (`POST /api/leaks`); nothing else accepts it
 */
export type RouteAuth =
  | { kind: 'public' }
  | { kind: 'service' }
  | { kind: 'operator' }
  | { kind: 'org'; role: OrgRole }
  | { kind: 'project'; role: ProjectRole; orOrg?: OrgRole; from?: 'query' | 'body' }
  | { kind: 'apikey' }
  | { kind: 'leakToken' };

export const PUBLIC: RouteAuth = { kind: 'public' };
export const SERVICE: RouteAuth = { kind: 'service' };
export const OPERATOR: RouteAuth = { kind: 'operator' };
export const APIKEY: RouteAuth = { kind: 'apikey' };
export const LEAK_TOKEN: RouteAuth = { kind: 'leakToken' };
export const orgRoleAtLeast = (role: OrgRole): RouteAuth => ({ kind: 'org', role });
export const projectRoleAtLeast = (role: ProjectRole, more: { orOrg?: OrgRole; from?: 'query' | 'body' } = {}): RouteAuth => ({
  kind: 'project',
  role,
  ...more,
});

/** One registered route, as the security sweep and the API description see it. */
export interface RouteInfo {
  method: string;
  url: string;
  auth: RouteAuth;
}
