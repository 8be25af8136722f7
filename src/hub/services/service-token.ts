import { createHash, timingSafeEqual } from 'node:crypto';
import { unauthorized } from '../../protocol/errors.js';
import type { HubContext } from '../context.js';

export const SERVICE_TOKEN_HEADER = 'x-santokit-service-token';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** `/internal/*` guard: the service token (header or Bearer) must match one of STK_SERVICE_TOKENS. */
export function requireServiceToken(ctx: HubContext, headers: Record<string, string | string[] | undefined>): void {
  const h = headers[SERVICE_TOKEN_HEADER];
  let token = typeof h === 'string' ? h : undefined;
  const authorization = headers.authorization;
  if (!token && typeof authorization === 'string' && authorization.startsWith('Bearer ')) {
    token = authorization.slice(7);
  }
  if (!token) throw unauthorized('service token required');
  const d = digest(token);
  let ok = false;
  for (const t of ctx.config.serviceTokens) ok = timingSafeEqual(d, digest(t)) || ok;
  if (!ok) throw unauthorized('invalid service token');
}
