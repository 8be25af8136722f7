/**
 * The Hub's webhook settings (STK_WEBHOOK_*), part of HUB_ENV. Tests shorten the timings.
 */
import { env } from '../../../common/env-config.js';
import type { HostPolicy } from '../../../common/net-policy.js';

export const WEBHOOK_ENV = {
  /** hosts/addresses/CIDRs a webhook may reach although they are loopback, private, link-local… (and where http:// is accepted) */
  STK_WEBHOOK_ALLOW_HOSTS: env.hostPolicy(),
  STK_WEBHOOK_TIMEOUT_MS: env.int(15_000, 100, 120_000),
  STK_WEBHOOK_LEASE_MS: env.int(0, 0),
  STK_WEBHOOK_BACKOFF_BASE_MS: env.int(5_000, 1),
  STK_WEBHOOK_BACKOFF_MAX_MS: env.int(3 * 3600_000, 1),
  STK_WEBHOOK_RETRY_FOR: env.durationMs('24h', 1000),
  STK_WEBHOOK_POLL_MS: env.int(1_000, 10),
  STK_WEBHOOK_SCAN_MS: env.int(60_000, 10),
  STK_WEBHOOK_CONCURRENCY: env.int(8, 1, 1000),
  STK_WEBHOOK_ENDPOINT_CONCURRENCY: env.int(2, 1, 100),
  STK_WEBHOOK_QUEUE_MAX: env.int(10_000, 1),
};

export interface WebhookSettings {
  /** STK_WEBHOOK_ALLOW_HOSTS (src/common/net-policy.ts syntax) */
  allow: HostPolicy;
  /** one attempt, connect to last response byte (STK_WEBHOOK_TIMEOUT_MS, default 15 s) */
  timeoutMs: number;
  /** how long a claimed delivery is this Hub's; a Hub that dies holding one loses it after this (default timeout + 30 s) */
  leaseMs: number;
  /** first retry delay; each next one ×4, jittered ±20 %, at most backoffMaxMs */
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** retried for this long after the event, then failed (STK_WEBHOOK_RETRY_FOR, default 24h) */
  retryForMs: number;
  /** how often the queue is checked for work other Hubs enqueued or retries that came due */
  pollMs: number;
  /** how often keys are checked for apikey.expiring */
  scanMs: number;
  /** attempts in flight per Hub */
  concurrency: number;
  /** attempts in flight per endpoint (counted over every Hub's leases when claiming) */
  endpointConcurrency: number;
  /** pending deliveries per project; past it new events are dropped and counted on the endpoint */
  queueMax: number;
}

type WebhookEnv = { [K in keyof typeof WEBHOOK_ENV]: (typeof WEBHOOK_ENV)[K] extends { _zod: { output: infer O } } ? O : never };

export function webhookSettings(e: WebhookEnv): WebhookSettings {
  const timeoutMs = e.STK_WEBHOOK_TIMEOUT_MS;
  return {
    allow: e.STK_WEBHOOK_ALLOW_HOSTS,
    timeoutMs,
    leaseMs: Math.max(e.STK_WEBHOOK_LEASE_MS || timeoutMs + 30_000, timeoutMs + 500),
    backoffBaseMs: e.STK_WEBHOOK_BACKOFF_BASE_MS,
    backoffMaxMs: Math.max(e.STK_WEBHOOK_BACKOFF_MAX_MS, e.STK_WEBHOOK_BACKOFF_BASE_MS),
    retryForMs: e.STK_WEBHOOK_RETRY_FOR,
    pollMs: e.STK_WEBHOOK_POLL_MS,
    scanMs: e.STK_WEBHOOK_SCAN_MS,
    concurrency: e.STK_WEBHOOK_CONCURRENCY,
    endpointConcurrency: e.STK_WEBHOOK_ENDPOINT_CONCURRENCY,
    queueMax: e.STK_WEBHOOK_QUEUE_MAX,
  };
}
