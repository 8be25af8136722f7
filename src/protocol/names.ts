/**
 * Names of projects, envs, connections and API keys. One rule, stated here, in the Hub's error, in the
 * API contract (define.ts `Name`) and in the docs (README "Names"):
 *
 *   1-63 characters: lowercase letters, digits, '_' or '-', starting and ending with a letter or digit.
 *
 * It takes the upstream Santokit names (`shop_1a2b3c4d`) and stays safe wherever a name goes: no '/',
 * '.', '%' or space, so never a path segment of its own or a file name (`..`, `a/b`); never SQL text
 * (names are only bind values); an API key's env tag keeps only `[a-z0-9]` (key-format.ts). Lowercase
 * only, so `Shop` and `shop` can never be two projects (names are compared exactly everywhere: URLs,
 * the Bridge's X-Santokit-Project/-Env headers); an upper-case name is refused with its lowercase form.
 */
export const NAME_RE = /^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$/;
export const NAME_PATTERN = NAME_RE.source;
export const NAME_RULE = "use 1-63 lowercase letters, digits, '_' or '-', starting and ending with a letter or digit";

export function nameError(kind: string, value: unknown): string | null {
  if (typeof value === 'string' && NAME_RE.test(value)) return null;
  const shown = JSON.stringify(typeof value === 'string' ? value.slice(0, 80) : value);
  const lower = typeof value === 'string' ? value.toLowerCase() : '';
  const hint = lower !== value && NAME_RE.test(lower) ? ` (names are lowercase: ${JSON.stringify(lower)})` : '';
  return `invalid ${kind} name ${shown}: ${NAME_RULE}${hint}`;
}

/** Identifiers used in roles, tables and columns. */
export const IDENT_RE = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

export const ORG_ROLES = ['owner', 'admin', 'member'] as const;
export const PROJECT_ROLES = ['admin', 'deployer', 'viewer'] as const;
export type OrgRole = (typeof ORG_ROLES)[number];
export type ProjectRole = (typeof PROJECT_ROLES)[number];
export const PROJECT_ROLE_RANK: Record<ProjectRole, number> = { viewer: 1, deployer: 2, admin: 3 };
export const ORG_ROLE_RANK: Record<OrgRole, number> = { member: 1, admin: 2, owner: 3 };
