import type { LoggerOptions } from 'pino';

/** Paths pino replaces with "[redacted]": secrets never reach a log line. */
export const REDACT_PATHS = [
  'req.headers["x-santokit-api-key"]',
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-santokit-service-token"]',
  'res.headers["set-cookie"]',
  '*.password',
  '*.newPassword',
  '*.dbUrl',
  '*.db_url',
  '*.databaseUrl',
  '*.token',
  '*.apiKey',
  '*.api_key',
  '*.secret',
  '*.inviteCode',
  'password',
  'dbUrl',
  'token',
  'apiKey',
];

export function loggerOptions(name: string, level = process.env.STK_LOG_LEVEL ?? 'info'): LoggerOptions {
  return {
    name,
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    serializers: {
      req(req: { id: string; method: string; url: string; headers: Record<string, unknown>; ip?: string }) {
        return { id: req.id, method: req.method, url: stripQuery(req.url), headers: { ...req.headers }, ip: req.ip };
      },
    },
  };
}

/** Query strings are dropped from logged URLs: they are the easiest place for a secret to hide. */
function stripQuery(url: string): string {
  const i = url.indexOf('?');
  return i < 0 ? url : url.slice(0, i) + '?…';
}
