/** Names of projects, envs, connections and API keys: lowercase letters, digits and '-', 1–63 chars. */
export const NAME_RE = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
export const NAME_RULE = "use 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit";

export function nameError(kind: string, value: unknown): string | null {
  if (typeof value !== 'string' || !NAME_RE.test(value)) {
    return `invalid ${kind} name ${JSON.stringify(typeof value === 'string' ? value.slice(0, 80) : value)}: ${NAME_RULE}`;
  }
  return null;
}

/** Identifiers used in roles, tables and columns. */
export const IDENT_RE = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

export const ORG_ROLES = ['owner', 'admin', 'member'] as const;
export const PROJECT_ROLES = ['admin', 'deployer', 'viewer'] as const;
export type OrgRole = (typeof ORG_ROLES)[number];
export type ProjectRole = (typeof PROJECT_ROLES)[number];
export const PROJECT_ROLE_RANK: Record<ProjectRole, number> = { viewer: 1, deployer: 2, admin: 3 };
export const ORG_ROLE_RANK: Record<OrgRole, number> = { member: 1, admin: 2, owner: 3 };
