import type { Operator } from './auth.js';

/** Who is calling a service, as the HTTP layer established it (services see no Fastify request). */
export interface Actor {
  /** the authenticated operator; null on public routes (login, invite acceptance) */
  operator: Operator | null;
  requestId: string | null;
  /** the client address (behind STK_TRUST_PROXY: the forwarded one) */
  ip: string | null;
}
