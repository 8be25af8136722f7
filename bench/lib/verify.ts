import { randomBytes } from 'node:crypto';
import { KeyTable } from '../../src/bridge/credentials/key-table.js';
import { verifyKey } from '../../src/bridge/credentials/verifier.js';
import { hashSecret } from '../../src/protocol/key-format.js';
import { generateKey } from '../../src/protocol/key-format.js';
import type { SyncKeyRecord } from '../../src/protocol/sync.js';
import { percentile } from './util.js';

/**
 * Micro-benchmark of the Bridge's key check (`verifyKey`: checksum → Map lookup → HMAC-SHA-256 →
 * constant-time compare → status), in this process, on a table of `tableSize` keys, presenting
 * `distinct` different valid keys round-robin. Each call is timed on its own with hrtime; the timer's
 * own cost (measured, ~tens of ns) is included, so the figures are an upper bound.
 */
export function benchVerify(o: { tableSize?: number; distinct?: number; calls?: number } = {}) {
  const tableSize = o.tableSize ?? 100_000;
  const distinct = o.distinct ?? 1000;
  const calls = o.calls ?? 200_000;
  const pepper = randomBytes(32);
  const records: SyncKeyRecord[] = [];
  const presented: string[] = [];
  for (let i = 0; i < tableSize; i++) {
    const { key, keyId, secret } = generateKey('bench');
    records.push({
      keyId,
      project: 'bench',
      env: 'bench',
      name: `k${i}`,
      roles: ['reader'],
      secretHash: hashSecret(pepper, secret).toString('hex'),
      prevSecretHash: null,
      prevExpiresAt: null,
      status: 'active',
      expiresAt: null,
      rateLimitPerMin: null,
    });
    if (i % Math.max(1, Math.floor(tableSize / distinct)) === 0 && presented.length < distinct) presented.push(key);
  }
  const table = new KeyTable();
  table.replaceAll(pepper, records);
  const now = Date.now();
  const check = (k: string) => {
    const r = verifyKey(table, k, now);
    if (typeof r === 'string') throw new Error(`verifyKey rejected a valid key: ${r}`);
  };
  for (let i = 0; i < 50_000; i++) check(presented[i % presented.length]!); // warm-up (JIT)
  const ns = new Float64Array(calls);
  for (let i = 0; i < calls; i++) {
    const k = presented[i % presented.length]!;
    const t0 = process.hrtime.bigint();
    check(k);
    ns[i] = Number(process.hrtime.bigint() - t0);
  }
  const timer = new Float64Array(10_000);
  for (let i = 0; i < timer.length; i++) {
    const t0 = process.hrtime.bigint();
    timer[i] = Number(process.hrtime.bigint() - t0);
  }
  return {
    p50: Math.round(percentile(ns, 50)),
    p99: Math.round(percentile(ns, 99)),
    tableSize,
    distinct,
    calls,
    timerOverheadNs: Math.round(percentile(timer, 50)),
  };
}
