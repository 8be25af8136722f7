/**
 * Where `/metrics` is served (docs/observability.md). Off unless STK_METRICS_PORT is set: then a
 * listener of its own on STK_METRICS_HOST (default 127.0.0.1) serves `GET /metrics` and nothing else —
 * never the public port, whatever else is set. STK_METRICS_TOKEN additionally requires
 * `Authorization: Bearer <token>` there (for a listener reachable from other machines).
 * STK_METRICS_PER_ENV=1 adds per-(project, env) series (bounded by the number of envs).
 */
import { env } from './env-config.js';

export const METRICS_TOKEN_MIN = 16;

/** The variables, spread into the Hub's and the Bridge's schemas (like HTTP_ENV). */
export const METRICS_ENV = {
  STK_METRICS_PORT: env.port(undefined),
  STK_METRICS_HOST: env.text('127.0.0.1'),
  STK_METRICS_TOKEN: env.secret(undefined, {
    check: (s) => {
      if (s.length < METRICS_TOKEN_MIN) throw new Error(`must be at least ${METRICS_TOKEN_MIN} characters (e.g. \`openssl rand -hex 24\`)`);
    },
  }),
  STK_METRICS_PER_ENV: env.flag(),
};

export interface MetricsSettings {
  /** the metrics listener's port (0 = any free one); null = metrics off */
  port: number | null;
  host: string;
  /** Bearer token the listener requires; null = none (reachable only where the listener is bound) */
  token: string | null;
  /** STK_METRICS_PER_ENV: series labelled by project and env */
  perEnv: boolean;
}

export const METRICS_OFF: MetricsSettings = { port: null, host: '127.0.0.1', token: null, perEnv: false };

export function metricsSettings(e: {
  STK_METRICS_PORT: number | undefined;
  STK_METRICS_HOST: string;
  STK_METRICS_TOKEN: string | undefined;
  STK_METRICS_PER_ENV: boolean;
}): MetricsSettings {
  if (e.STK_METRICS_TOKEN !== undefined && e.STK_METRICS_PORT === undefined) {
    throw new Error('STK_METRICS_TOKEN is set but STK_METRICS_PORT is not: /metrics is only ever served on its own port (set STK_METRICS_PORT)');
  }
  return { port: e.STK_METRICS_PORT ?? null, host: e.STK_METRICS_HOST, token: e.STK_METRICS_TOKEN ?? null, perEnv: e.STK_METRICS_PER_ENV };
}
