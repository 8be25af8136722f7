import type { FastifyBaseLogger } from 'fastify';
import type { ReleaseIR } from '../../protocol/release.js';
import {
  SYNC_CAPS,
  SYNC_CAPS_PARAM,
  SYNC_KEY_ROWS_PARAM,
  SYNC_KEY_ROWS_VALUE,
  SYNC_SESSION_HEADER,
  type SyncAck,
  type SyncEnvState,
  type SyncMessage,
  type UsageReport,
} from '../../protocol/sync.js';
import { addKeyRows, toEntry, type KeyEntry, type KeyTable } from '../credentials/key-table.js';
import type { UsageCounter } from '../credentials/usage.js';

/** What the sync feeds releases into (the Bridge's release cache). */
export interface ReleaseSink {
  set(project: string, env: string, release: ReleaseIR | null, connections: Record<string, string>): unknown;
  delete(project: string, env: string): unknown;
}

export interface HubSyncOptions {
  hubUrls: string[];
  serviceToken: string;
  bridgeId: string;
  maxStaleMs: number;
  /** how often usage is reported to the Hub (≤ 60 s) */
  usageIntervalMs: number;
  /** no byte from the Hub for this long → reconnect (the Hub sends heartbeats) */
  idleTimeoutMs: number;
  /** first retry delay; doubles up to maxBackoffMs */
  minBackoffMs: number;
  maxBackoffMs: number;
}

export interface HubSyncDeps {
  table: KeyTable;
  usage: UsageCounter;
  log: FastifyBaseLogger;
  releases: ReleaseSink;
  /** called after a key changed (e.g. to reset its rate-limit bucket) */
  onKeyChange?: (keyId: string) => void;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        resolve();
      },
      { once: true },
    );
  });

const envKey = (p: string, e: string) => p + '\u0000' + e;

/** a usage report goes to the Hub in parts of at most this many bytes of key entries (its body limit is 10 MB) … */
export const USAGE_PART_BYTES = 4 * 1024 * 1024;
/** … and at most this many keys (its schema takes 100,000) */
export const USAGE_PART_KEYS = 20_000;

/**
 * Follows the Hub: loads a snapshot, then applies the change stream, acknowledging every change only
 * after it is applied in memory. On disconnect it retries with backoff, round-robin across
 * `hubUrls`, resuming from the last cursor (the Hub sends a fresh snapshot when it cannot resume).
 * `lastContact` is the last time any byte arrived from a Hub; beyond `maxStaleMs` keys are refused.
 */
export class HubSync {
  readonly #o: HubSyncOptions;
  readonly #d: HubSyncDeps;
  #cursor: number | undefined;
  #synced = false;
  #lastContact = 0;
  #stopped = false;
  #abort: AbortController | null = null;
  readonly #stopCtl = new AbortController();
  #loop: Promise<void> | null = null;
  #usageTimer: NodeJS.Timeout | null = null;
  #hubIndex = 0;
  #activeHub: string | null = null;
  #envs = new Set<string>();
  #firstSync: { promise: Promise<void>; resolve: () => void };
  /** snapshot being received */
  #pending: { seq: number; pepper: Buffer; envs: SyncEnvState[]; keys: Map<string, KeyEntry> } | null = null;
  #ackQueue: number[] = [];
  /** the session of the open stream (the Hub accepts acks and usage only with it) */
  #session = '';
  #ackSnapshot: number | undefined;
  #acking = false;
  /** Bridges in the cluster, as the Hub's last heartbeat said (1 until one does) */
  #clusterBridges = 1;
  /** streams lost (or refused) and retried since start */
  #reconnects = 0;

  constructor(o: HubSyncOptions, d: HubSyncDeps) {
    this.#o = o;
    this.#d = d;
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    this.#firstSync = { promise, resolve };
  }

  get synced(): boolean {
    return this.#synced;
  }

  /** Bridges connected to the Hubs of the store (this one included), from the Hub's heartbeats; ≥ 1. */
  get clusterBridges(): number {
    return this.#clusterBridges;
  }

  /**
   * For /metrics: the cursor applied (every change up to it is in memory), when a byte last came from a
   * Hub (epoch ms, 0 = never), the Hub streamed from now (its index in STK_HUB_URL, -1 = none), and how
   * many times the stream was lost or refused and retried.
   */
  stats(): { cursor: number; lastContact: number; hubIndex: number; reconnects: number } {
    const hub = this.#activeHub;
    return {
      cursor: this.#cursor ?? 0,
      lastContact: this.#lastContact,
      hubIndex: hub === null ? -1 : this.#o.hubUrls.indexOf(hub),
      reconnects: this.#reconnects,
    };
  }

  /** True when the Bridge synced once but has not heard from any Hub for longer than max-stale. */
  isStale(now = Date.now()): boolean {
    return this.#synced && now - this.#lastContact > this.#o.maxStaleMs;
  }

  /** Starts following; resolves after the first snapshot or `waitMs`, whichever comes first. */
  async start(waitMs = 10_000): Promise<boolean> {
    if (!this.#loop) {
      this.#loop = this.#run();
      this.#usageTimer = setInterval(() => void this.flushUsage(), this.#o.usageIntervalMs);
      this.#usageTimer.unref();
    }
    let t: NodeJS.Timeout | undefined;
    await Promise.race([this.#firstSync.promise, new Promise<void>((r) => (t = setTimeout(r, waitMs)))]);
    if (t) clearTimeout(t);
    return this.#synced;
  }

  /** Stops following and reports the remaining usage (bounded wait). */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#usageTimer) clearInterval(this.#usageTimer);
    // while the stream is still open: the Hub takes usage only from the stream's session
    await this.flushUsage(2000);
    this.#stopCtl.abort();
    this.#abort?.abort();
    await this.#loop?.catch(() => {});
  }

  #headers(json = false): Record<string, string> {
    const h: Record<string, string> = { 'x-santokit-service-token': this.#o.serviceToken };
    if (json) h['content-type'] = 'application/json';
    return h;
  }

  async #run(): Promise<void> {
    let backoff = this.#o.minBackoffMs;
    while (!this.#stopped) {
      const hub = this.#o.hubUrls[this.#hubIndex % this.#o.hubUrls.length]!;
      const started = Date.now();
      try {
        await this.#follow(hub);
      } catch (err) {
        if (!this.#stopped) this.#d.log.warn({ hub, err: (err as Error).message }, 'hub sync: stream lost');
      }
      this.#activeHub = null;
      this.#pending = null;
      if (this.#stopped) break;
      this.#reconnects++;
      if (Date.now() - started > 30_000) backoff = this.#o.minBackoffMs; // it had been healthy
      this.#hubIndex++; // fail over to the next Hub (the same one when there is only one)
      await sleep(backoff * (0.75 + Math.random() * 0.5), this.#stopCtl.signal);
      backoff = Math.min(backoff * 2, this.#o.maxBackoffMs);
    }
  }

  async #follow(hub: string): Promise<void> {
    const ac = new AbortController();
    this.#abort = ac;
    // keyrows: the compact snapshot batches (a Hub that does not know them ignores this and sends keys)
    // caps: what this Bridge enforces (a Bridge that does not say so gets such keys as revoked)
    const qs = new URLSearchParams({ bridgeId: this.#o.bridgeId, [SYNC_KEY_ROWS_PARAM]: SYNC_KEY_ROWS_VALUE, [SYNC_CAPS_PARAM]: SYNC_CAPS.join(',') });
    if (this.#cursor !== undefined) qs.set('since', String(this.#cursor));
    const res = await fetch(`${hub}/internal/sync/stream?${qs}`, { headers: this.#headers(), signal: ac.signal });
    if (!res.ok || !res.body) {
      const text = await res.text().catch(() => '');
      if (res.status === 401) {
        // never the token itself: only which Hub refused it and what to do
        this.#d.log.error(
          { hub },
          "hub sync: the Hub rejected this Bridge's service token (401): set STK_SERVICE_TOKEN to one of the Hub's STK_SERVICE_TOKENS; until then keys and releases stay as last synced (refused after max-stale)",
        );
      }
      throw new Error(`stream answered ${res.status} ${text.slice(0, 200)}`);
    }
    this.#activeHub = hub;
    this.#session = res.headers.get(SYNC_SESSION_HEADER) ?? '';
    this.#touch();
    let idle: NodeJS.Timeout | undefined;
    const armIdle = () => {
      if (idle) clearTimeout(idle);
      idle = setTimeout(() => ac.abort(new Error('no heartbeat from the Hub')), this.#o.idleTimeoutMs);
      idle.unref();
    };
    armIdle();
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    // the start of a line that spans reads; each read is searched once (a snapshot batch is ~250 KB)
    const parts: string[] = [];
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.#touch();
        armIdle();
        const text = decoder.decode(value, { stream: true });
        let from = 0;
        let nl: number;
        while ((nl = text.indexOf('\n', from)) >= 0) {
          let line = text.slice(from, nl);
          from = nl + 1;
          if (parts.length) {
            parts.push(line);
            line = parts.join('');
            parts.length = 0;
          }
          if (line) this.#handle(JSON.parse(line) as SyncMessage);
        }
        if (from < text.length) parts.push(from === 0 ? text : text.slice(from));
        this.#flushAcks(hub);
      }
    } finally {
      if (idle) clearTimeout(idle);
      ac.abort();
    }
  }

  #touch() {
    this.#lastContact = Date.now();
  }

  #handle(m: SyncMessage): void {
    switch (m.type) {
      case 'snapshot':
        this.#pending = { seq: m.seq, pepper: Buffer.from(m.pepper, 'base64'), envs: m.envs, keys: new Map() };
        return;
      case 'keys':
        // converted on arrival: the raw records of a large snapshot are garbage as soon as their batch is read
        if (this.#pending) {
          for (const k of m.keys) {
            const e = toEntry(k);
            if (e) this.#pending.keys.set(e.keyId, e);
          }
        }
        return;
      case 'keyrows':
        if (this.#pending) addKeyRows(m, this.#pending.keys);
        return;
      case 'snapshot-end': {
        const p = this.#pending;
        if (!p || p.seq !== m.seq) return;
        this.#pending = null;
        this.#d.table.install(p.pepper, p.keys);
        const seen = new Set<string>();
        for (const e of p.envs) {
          seen.add(envKey(e.project, e.env));
          this.#applyEnv(e);
        }
        for (const k of this.#envs) {
          if (!seen.has(k)) {
            const [project, env] = k.split('\u0000') as [string, string];
            // its pools close in the background; a failure to close one is logged, never unhandled
            Promise.resolve(this.#d.releases.delete(project, env)).catch((err: unknown) =>
              this.#d.log.warn({ project, env, err: (err as Error).message }, 'hub sync: closing a removed env failed'),
            );
            this.#envs.delete(k);
          }
        }
        this.#cursor = m.seq;
        this.#ackSnapshot = m.seq;
        if (!this.#synced) {
          this.#synced = true;
          this.#firstSync.resolve();
        }
        this.#d.log.info({ keys: this.#d.table.size, envs: p.envs.length, seq: m.seq }, 'hub sync: snapshot loaded');
        return;
      }
      case 'change': {
        if (m.kind === 'apikey') {
          this.#d.table.upsert(m.keyId, m.key);
          this.#d.onKeyChange?.(m.keyId);
        } else if (m.kind === 'release' || m.kind === 'connection') {
          this.#applyEnv(m.state);
        }
        this.#cursor = m.cursor;
        this.#ackQueue.push(m.seq);
        return;
      }
      case 'heartbeat':
        if (!this.#pending) this.#cursor = m.cursor;
        // bounded: a Hub's figure is trusted to be the cluster's size, not to take every key's limit to 0
        if (typeof m.bridges === 'number' && Number.isSafeInteger(m.bridges) && m.bridges >= 1) this.#clusterBridges = Math.min(m.bridges, 10_000);
        return;
    }
  }

  #applyEnv(e: SyncEnvState) {
    this.#envs.add(envKey(e.project, e.env));
    try {
      this.#d.releases.set(e.project, e.env, e.release, e.connections);
    } catch (err) {
      // a release this Bridge cannot compile keeps the previous one serving
      this.#d.log.error({ project: e.project, env: e.env, err: (err as Error).message }, 'hub sync: could not load the release');
    }
  }

  /** Sends queued acks (one request at a time; later acks batch up meanwhile). */
  #flushAcks(hub: string): void {
    if (this.#acking || (this.#ackQueue.length === 0 && this.#ackSnapshot === undefined)) return;
    const seqs = this.#ackQueue;
    const snapshot = this.#ackSnapshot;
    this.#ackQueue = [];
    this.#ackSnapshot = undefined;
    this.#acking = true;
    fetch(`${hub}/internal/sync/ack`, {
      method: 'POST',
      headers: this.#headers(true),
      body: JSON.stringify({ bridgeId: this.#o.bridgeId, session: this.#session, seqs, snapshot } satisfies SyncAck),
    })
      .then(async (r) => {
        await r.arrayBuffer().catch(() => {});
        if (!r.ok) throw new Error(`ack answered ${r.status}`);
        this.#touch();
      })
      .catch((err) => {
        this.#d.log.warn({ hub, err: (err as Error).message }, 'hub sync: ack failed');
      })
      .finally(() => {
        this.#acking = false;
        if (this.#ackQueue.length || this.#ackSnapshot !== undefined) this.#flushAcks(this.#activeHub ?? hub);
      });
  }

  /**
   * Reports usage counted since the last report; on failure the counts are kept for the next one.
   * Sent in parts of bounded size (USAGE_PART_BYTES, USAGE_PART_KEYS), every part but the last marked
   * `more`: tens of thousands of keys used in an interval would otherwise pass the Hub's body limit and
   * the whole interval's counts would be refused. `timeoutMs` bounds the whole report.
   */
  async flushUsage(timeoutMs = 10_000): Promise<boolean> {
    // sent every interval, empty too: the Hub learns how recent this Bridge's figures are (`apikey show`)
    const report: UsageReport = this.#d.usage.drain(this.#o.bridgeId) ?? { bridgeId: this.#o.bridgeId, keys: [] };
    const { keys, ...head } = report;
    // keys[0..sent) reached the Hub (or were refused for good)
    let sent = 0;
    // only the Hub this Bridge streams from knows its session; on failure the counts wait for the next stream
    const hub = this.#activeHub;
    if (hub) {
      head.session = this.#session;
      const headJson = JSON.stringify(head).slice(0, -1);
      const deadline = Date.now() + timeoutMs;
      let refused = false;
      let failed = false;
      try {
        do {
          let end = sent;
          let bytes = 0;
          const part: string[] = [];
          for (; end < keys.length && part.length < USAGE_PART_KEYS; end++) {
            const k = JSON.stringify(keys[end]);
            if (part.length > 0 && bytes + k.length > USAGE_PART_BYTES) break;
            part.push(k);
            bytes += k.length + 1;
          }
          const more = end < keys.length;
          const r = await fetch(`${hub}/internal/sync/usage`, {
            method: 'POST',
            headers: this.#headers(true),
            body: `${headJson}${more ? ',"more":true' : ''},"sentAt":"${new Date().toISOString()}","keys":[${part.join(',')}]}`,
            signal: AbortSignal.timeout(Math.max(1, deadline - Date.now())),
          });
          await r.arrayBuffer().catch(() => {});
          if (!r.ok) {
            // a part the Hub cannot take (400: e.g. a Hub of another version) would be refused forever and
            // hold back every later count: dropped, said once per part. 409 (stream session) and 5xx are retried.
            if (r.status !== 400 && r.status !== 413 && r.status !== 422) {
              failed = true;
              break;
            }
            this.#d.log.warn({ hub, status: r.status, keys: end - sent }, 'hub sync: the Hub refused a usage report; its counts are dropped');
            // the next report says requests went uncounted (a grace period must not end on their account)
            this.#d.usage.lost(Date.now());
            refused = true;
          }
          sent = end;
        } while (sent < keys.length);
        if (!failed) return !refused;
      } catch {
        /* kept for the next report */
      }
    }
    if (sent < keys.length) this.#d.usage.restore({ ...head, keys: sent === 0 ? keys : keys.slice(sent) });
    return false;
  }
}
