import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { readVerifySamples } from '../../src/bridge/credentials/verify-samples.js';
import { smokeCall, startBridge, type Hub, type StackPaths } from './stack.js';
import { percentile, round, waitFor } from './util.js';
import { wrk, type WrkResult } from './wrk.js';

export interface VerifyUnderLoad {
  p50_ns: number;
  p99_ns: number;
  hmac_p50_ns: number;
  hmac_p99_ns: number;
  p99_ratio: number;
}

/**
 * Issue 18 part 4, on the hot path: a Bridge started with STK_BENCH_VERIFY_SAMPLES times every
 * `verifyKey` call and, beside it on the same request, a bare HMAC-SHA-256 of a 22-character secret
 * (src/bridge/credentials/verify-samples.ts). Under wrk at `connections` (warm-up, then SIGUSR2 to
 * start a fresh sample window, the measured run, SIGUSR2 to write it out) both distributions come
 * from the same process at the same moments: their ratio is what the machine cannot blur.
 */
export async function verifyUnderLoad(o: {
  paths: StackPaths;
  hub: Hub;
  apiKey: string;
  callLua: string;
  connections: number;
  warmupS: number;
  seconds: number;
}): Promise<{ summary: VerifyUnderLoad; samples: number; res: WrkResult; verifyNs: Float64Array; hmacNs: Float64Array }> {
  const file = join(o.paths.scratch, 'verify-samples.bin');
  const bridge = await startBridge(o.paths, o.hub, 'verify', ['bench'], { STK_BENCH_VERIFY_SAMPLES: file });
  try {
    await smokeCall(bridge.url, o.apiKey);
    const dump = async () => {
      rmSync(file, { force: true });
      process.kill(bridge.proc.pid, 'SIGUSR2');
      await waitFor(async () => existsSync(file), 10_000, 'the Bridge to write its verify samples');
      return readVerifySamples(readFileSync(file));
    };
    await wrk({ url: bridge.url, script: o.callLua, connections: o.connections, seconds: o.warmupS, env: { API_KEY: o.apiKey } });
    await dump(); // discards the warm-up's samples
    const res = await wrk({ url: bridge.url, script: o.callLua, connections: o.connections, seconds: o.seconds, env: { API_KEY: o.apiKey } });
    const { verifyNs, hmacNs } = await dump();
    const p99 = percentile(verifyNs, 99);
    const hp99 = percentile(hmacNs, 99);
    return {
      summary: {
        p50_ns: Math.round(percentile(verifyNs, 50)),
        p99_ns: Math.round(p99),
        hmac_p50_ns: Math.round(percentile(hmacNs, 50)),
        hmac_p99_ns: Math.round(hp99),
        p99_ratio: round(p99 / hp99, 2),
      },
      samples: verifyNs.length,
      res,
      verifyNs,
      hmacNs,
    };
  } finally {
    await bridge.proc.stop();
  }
}
