import { AppError } from '../../protocol/errors.js';
import type { OrgRole, ProjectRole } from '../../protocol/names.js';
import type { Operator } from './auth.js';
import type { ProjectRef } from './rbac.js';

/** Who is calling a service, as the HTTP layer established it (services see no Fastify request). */
export interface Actor {
  /** the authenticated operator; null on public routes (login, invite acceptance) */
  operator: Operator | null;
  requestId: string | null;
  /** the client address (behind STK_TRUST_PROXY: the forwarded one) */
  ip: string | null;
  /**
   * The operator's roles as already read for this request (by the route's auth hook, or by an
   * earlier check in the service), so a service's own check does not query them again. Written
   * only by rbac.ts; an actor without it (a test, another caller) makes rbac.ts read the store.
   */
  roles?: ResolvedRoles;
}

export interface ResolvedRoles {
  /** the operator's active role in the org (null: not a member) */
  org?: { orgId: string; role: OrgRole | null };
  /** the operator's effective role on one project (null: none) */
  project?: { project: ProjectRef; role: ProjectRole | null };
}

/** The operator of a service that needs one (a route declaring operator, org or project auth has it). */
export function signedIn(actor: Actor): Operator {
  if (!actor.operator) throw new AppError('INTERNAL_ERROR', 'no authenticated operator on this route');
  return actor.operator;
}
