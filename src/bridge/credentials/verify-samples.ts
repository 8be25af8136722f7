import { renameSync, writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { hashSecret } from '../../protocol/key-format.js';
import type { KeyEntry } from './key-table.js';
import { ApiKeyVerifier, type VerifyFailure } from './verifier.js';

/** a 22-character secret (the length of every key's secret) for the bare HMAC timed beside each check */
const BARE_SECRET = 'benchBareHmacSecret022';
/** samples kept between two dumps (a ring: the newest win); 2 × 8 bytes each */
const RING = 1 << 18;

/**
 * BENCHMARK ONLY (`STK_BENCH_VERIFY_SAMPLES=<file>`, issue 18 part 4): the Bridge's verifier with every
 * `verifyKey` call timed on the real hot path under load, and beside it — on the same request, in the
 * same process, alternately before and after — one bare `HMAC-SHA-256(pepper, 22-character secret)`,
 * so the two are measured under the same GC, scheduler and cache conditions and can be compared as a
 * ratio. Durations go into a preallocated ring (no allocation per sample). On SIGUSR2 the samples
 * since the previous SIGUSR2 are written to the file (`u32 count`, then `count` f64 verify ns, then
 * `count` f64 HMAC ns; written to `<file>.tmp` and renamed) and the ring restarts. The normal Bridge
 * never constructs this class: its hot path is the plain `ApiKeyVerifier`.
 */
export class SampledApiKeyVerifier extends ApiKeyVerifier {
  readonly #verifyNs = new Float64Array(RING);
  readonly #hmacNs = new Float64Array(RING);
  #n = 0;

  constructor(file: string, ...args: ConstructorParameters<typeof ApiKeyVerifier>) {
    super(...args);
    process.on('SIGUSR2', () => this.dump(file));
  }

  override verify(presented: unknown, now: number): KeyEntry | VerifyFailure {
    const pepper = this.table.pepper;
    const i = this.#n++ & (RING - 1);
    let r: KeyEntry | VerifyFailure;
    if (pepper && i & 1) {
      const t0 = performance.now();
      hashSecret(pepper, BARE_SECRET);
      const t1 = performance.now();
      r = super.verify(presented, now);
      const t2 = performance.now();
      this.#hmacNs[i] = (t1 - t0) * 1e6;
      this.#verifyNs[i] = (t2 - t1) * 1e6;
    } else {
      const t0 = performance.now();
      r = super.verify(presented, now);
      const t1 = performance.now();
      if (pepper) hashSecret(pepper, BARE_SECRET);
      const t2 = performance.now();
      this.#verifyNs[i] = (t1 - t0) * 1e6;
      this.#hmacNs[i] = (t2 - t1) * 1e6;
    }
    return r;
  }

  dump(file: string): void {
    const n = Math.min(this.#n, RING);
    const out = Buffer.alloc(4 + 16 * n);
    out.writeUInt32LE(n, 0);
    Buffer.from(this.#verifyNs.buffer, 0, 8 * n).copy(out, 4);
    Buffer.from(this.#hmacNs.buffer, 0, 8 * n).copy(out, 4 + 8 * n);
    writeFileSync(`${file}.tmp`, out);
    renameSync(`${file}.tmp`, file);
    this.#n = 0;
  }
}

/** Reads a file written by `SampledApiKeyVerifier.dump`. */
export function readVerifySamples(buf: Buffer): { verifyNs: Float64Array; hmacNs: Float64Array } {
  const n = buf.readUInt32LE(0);
  const copy = (at: number) => {
    const a = new Float64Array(n);
    for (let i = 0; i < n; i++) a[i] = buf.readDoubleLE(at + 8 * i);
    return a;
  };
  return { verifyNs: copy(4), hmacNs: copy(4 + 8 * n) };
}
