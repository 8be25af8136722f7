import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { unauthorized } from '../../protocol/errors.js';
import type { HubContext } from '../context.js';

export const SERVICE_TOKEN_HEADER = 'x-santokit-service-token';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** `/internal/*` guard: the service token (header or Bearer) must match one of STK_SERVICE_TOKENS. */
export function requireServiceToken(ctx: HubContext, req: FastifyRequest): void {
  const h = req.headers[SERVICE_TOKEN_HEADER];
  let token = typeof h === 'string' ? h : undefined;
  if (!token && typeof req.headers.authorization === 'string' && req.headers.authorization.startsWith('Bearer ')) {
    token = req.headers.authorization.slice(7);
  }
  if (!token) throw unauthorized('service token required');
  const d = digest(token);
  let ok = false;
  for (const t of ctx.config.serviceTokens) ok = timingSafeEqual(d, digest(t)) || ok;
  if (!ok) throw unauthorized('invalid service token');
}
