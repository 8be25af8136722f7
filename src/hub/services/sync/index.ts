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
import { SyncHub, type AckObserver, type AckResult } from './hub.js';
import { activeSpan } from '../../../common/tracing-config.js';
import type { TraceSpan } from '../../../common/tracing.js';
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
  // with tracing on: a `stk.change` span under the request that committed it, one `stk.bridge.ack` per Bridge
  const parent = activeSpan();
  const observer = parent === null ? undefined : ackSpans(parent.child('stk.change', { 'stk.change.seq': seq, 'stk.change.kind': change }));
  const r = await getSync(ctx).waitForAcks(seq, timeoutMs, observer);
  ctx.stats.ack(change, r, (performance.now() - t0) / 1000);
  return r;
}

/** The spans of one change's wait: each Bridge's ends when it applied the change; a laggard's ends failed at the timeout. */
function ackSpans(change: TraceSpan): AckObserver {
  const open = new Map<string, TraceSpan>();
  return {
    begin(targets) {
      change.set('stk.change.bridges', targets.length);
      for (const id of targets) open.set(id, change.child('stk.bridge.ack', { 'stk.bridge.id': id }));
    },
    acked(id) {
      open.get(id)?.end();
      open.delete(id);
    },
    end(r) {
      for (const s of open.values()) {
        s.set('stk.bridge.lagging', true);
        s.fail('did not apply the change within STK_REVOKE_ACK_TIMEOUT_MS');
        s.end();
      }
      open.clear();
      change.set('stk.change.acked', r.acked);
      change.set('stk.change.lagging', r.lagging.length);
      if (r.lagging.length) change.fail(`${r.lagging.length} Bridge(s) did not apply the change in time: ${r.lagging.join(', ')}`);
      change.end();
    },
  };
}
