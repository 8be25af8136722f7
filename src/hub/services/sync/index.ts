/**
 * The Hub side of the Bridge sync: snapshots, the change stream, acknowledgements and the
 * "wait until every Bridge applied seq N" primitive that makes revoke (and apply, promote, rollback,
 * connection changes) read-your-writes.
 *
 * Sequence numbers live in the store (`change_events.seq`), so a change committed by ANOTHER Hub
 * process on the same PostgreSQL store reaches this Hub's streams too: through LISTEN/NOTIFY
 * (channel `stk_changes`, notified inside the writing transaction, so delivered exactly at commit)
 * when the store is PostgreSQL, and through a slow poll in every case.
 *
 * feed.ts: what is sent (change rows, snapshots) · stream.ts: one Bridge's stream, in seq order ·
 * hub.ts: acks, waits and cluster presence · this file: the per-Hub instance.
 */
import type { HubContext } from '../../context.js';
import { SyncHub, type AckResult } from './hub.js';
import type { ChangeKind } from '../../stats.js';

export { SyncHub, type AckResult, type ClusterBridge } from './hub.js';
export { responseSink, type StreamSink } from './stream.js';
export { buildSnapshot, loadCurrentRelease, loadEnvState, loadKeyRecord, toKeyRecord } from './feed.js';

const instances = new WeakMap<HubContext, SyncHub>();

/** The sync state of this Hub process (created on first use). */
export function getSync(ctx: HubContext): SyncHub {
  let s = instances.get(ctx);
  if (!s) {
    s = new SyncHub(ctx);
    instances.set(ctx, s);
  }
  return s;
}

/** The sync state of this Hub process if it was created (for /metrics: never creates one). */
export function peekSync(ctx: HubContext): SyncHub | undefined {
  return instances.get(ctx);
}

/**
 * After a committed change: wake the streams (notifyChanged does that) and wait for the acks. The
 * wait's duration and laggards are counted by change kind (ctx.stats, /metrics).
 */
export async function waitForBridges(ctx: HubContext, seq: number, timeoutMs = ctx.config.ackTimeoutMs, change: ChangeKind = 'apikey'): Promise<AckResult> {
  const t0 = performance.now();
  const r = await getSync(ctx).waitForAcks(seq, timeoutMs);
  ctx.stats.ack(change, r, (performance.now() - t0) / 1000);
  return r;
}
