/**
 * Webhook events the Hub sends (docs/webhooks.md). Each delivery is a POST of
 * `{"type", "timestamp", "data"}` signed per the Standard Webhooks spec (webhook-id,
 * webhook-timestamp, webhook-signature headers).
 */
export const WEBHOOK_EVENTS = [
  'apikey.created',
  'apikey.rotated',
  'apikey.revoked',
  'apikey.updated',
  'apikey.suspended',
  'apikey.resumed',
  'apikey.expiring',
  'apikey.leaked',
  'apikey.rate_limited',
  'apikey.grace_ended',
  'release.applied',
] as const;
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number];

/** What `stk webhooks test` sends: to that endpoint only, whatever events it subscribed to. */
export const WEBHOOK_TEST_EVENT = 'webhook.test';

export const isWebhookEvent = (s: string): s is WebhookEvent => (WEBHOOK_EVENTS as readonly string[]).includes(s);

/** A delivery's body. */
export interface WebhookPayload {
  type: WebhookEvent | typeof WEBHOOK_TEST_EVENT;
  /** when the event happened (ISO-8601); webhook-timestamp is when this attempt was signed */
  timestamp: string;
  data: Record<string, unknown>;
}
