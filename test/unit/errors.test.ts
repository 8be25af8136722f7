import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { AppError, ERROR_CATALOGUE, codeForStatus, envelope } from '../../src/protocol/errors.js';

describe('error catalogue', () => {
  it('has the spec codes with their statuses, and one generic code per status', () => {
    expect(ERROR_CATALOGUE.BAD_REQUEST.status).toBe(400);
    expect(ERROR_CATALOGUE.UNAUTHORIZED.status).toBe(401);
    expect(ERROR_CATALOGUE.FORBIDDEN.status).toBe(403);
    expect(ERROR_CATALOGUE.NOT_FOUND.status).toBe(404);
    expect(ERROR_CATALOGUE.CONFLICT.status).toBe(409);
    expect(ERROR_CATALOGUE.INVALID_ROLE.status).toBe(422);
    expect(ERROR_CATALOGUE.TOO_MANY_REQUESTS.status).toBe(429);
    expect(ERROR_CATALOGUE.INTERNAL_ERROR.status).toBe(500);
    expect(ERROR_CATALOGUE.SERVICE_UNAVAILABLE.status).toBe(503);
    expect(ERROR_CATALOGUE.METHOD_NOT_ALLOWED.status).toBe(405);
    // a status shared by several codes maps to the generic one (the first listed); the others are
    // exactly these named cases
    const shared = Object.entries(ERROR_CATALOGUE)
      .filter(([code, e]) => codeForStatus(e.status) !== code)
      .map(([code]) => code);
    expect(shared).toEqual(['INVALID_IP_ALLOWLIST', 'RESPONSE_TOO_LARGE']);
    expect(codeForStatus(400)).toBe('BAD_REQUEST');
  });

  it('every code is documented in docs/errors.md and every documented code exists', () => {
    const section = readFileSync('docs/errors.md', 'utf8');
    const documented = [...section.matchAll(/^\| `([A-Z_]+)` \| (\d{3}) \|/gm)].map((m) => [m[1], Number(m[2])]);
    const catalogue = Object.entries(ERROR_CATALOGUE).map(([c, v]) => [c, v.status]);
    expect(documented.sort()).toEqual(catalogue.sort());
  });

  it('AppError carries status and envelope shape', () => {
    const e = new AppError('CONFLICT', 'exists');
    expect(e.status).toBe(409);
    expect(envelope(e.code, e.message, 'r1')).toEqual({ error: { code: 'CONFLICT', message: 'exists', requestId: 'r1' } });
    expect(codeForStatus(404)).toBe('NOT_FOUND');
    expect(codeForStatus(418)).toBe('BAD_REQUEST');
  });
});
