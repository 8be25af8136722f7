import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { percentile } from './util.js';

/**
 * Revocation under load: `workersPerBridge` keep-alive loops per Bridge send `/call`s, cycling through
 * all the keys (revoked or not), while the caller revokes the keys one by one. Every response is
 * recorded with the moment its request was SENT; a 2xx for a key whose request was sent after that
 * key's `stk apikey revoke` had returned is a violation.
 */

interface Sample {
  key: number;
  sentAt: number;
  status: number;
}

export interface LoadHandle {
  stop(): Promise<Sample[]>;
  count(): number;
}

const BODY = JSON.stringify({ path: 'db/users/select', params: { limit: 1 } });

function post(agent: Agent, url: URL, apiKey: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request(
      {
        agent,
        host: url.hostname,
        port: url.port,
        path: '/call',
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(BODY), 'x-santokit-api-key': apiKey },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', () => resolve(-1));
      },
    );
    req.on('error', () => resolve(-1));
    req.end(BODY);
  });
}

/**
 * `workersPerBridge` keep-alive loops per Bridge. With `totalRps` > 0 each loop is paced so the Bridges
 * together get about that many requests per second (the Bridges stay busy without starving the Hub and
 * the CLI of CPU on a 2-core machine); 0 = as fast as they answer.
 */
export function startLoad(bridgeUrls: string[], keys: string[], workersPerBridge: number, totalRps = 0): LoadHandle {
  const samples: Sample[] = [];
  let stopping = false;
  let next = 0;
  const loops: Array<Promise<void>> = [];
  const interval = totalRps > 0 ? (bridgeUrls.length * workersPerBridge * 1000) / totalRps : 0;
  for (const u of bridgeUrls) {
    const url = new URL(u);
    const agent = new Agent({ keepAlive: true, maxSockets: workersPerBridge });
    for (let w = 0; w < workersPerBridge; w++) {
      loops.push(
        (async () => {
          let due = performance.now() + Math.random() * interval;
          while (!stopping) {
            if (interval) {
              const wait = due - performance.now();
              if (wait > 1) await new Promise((r) => setTimeout(r, wait));
              due = Math.max(due + interval, performance.now() - interval);
            }
            const key = next++ % keys.length;
            const sentAt = performance.now();
            const status = await post(agent, url, keys[key]!);
            samples.push({ key, sentAt, status });
          }
        })(),
      );
    }
  }
  return {
    count: () => samples.length,
    async stop() {
      stopping = true;
      await Promise.all(loops);
      return samples;
    },
  };
}

export interface RevocationOutcome {
  requests: number;
  acceptedBeforeRevoke: number;
  rejectedAfterRevoke: number;
  /** 401s for requests sent while that key's revoke was in flight (allowed either way) */
  rejectedDuringRevoke: number;
  acceptedAfterRevokeReturned: number;
  /** responses that are neither 2xx nor 401 (should be 0) */
  otherStatuses: Record<string, number>;
}

export function judge(samples: Sample[], revokeStartedAt: number[], revokedAt: number[]): RevocationOutcome {
  const out: RevocationOutcome = {
    requests: samples.length,
    acceptedBeforeRevoke: 0,
    rejectedAfterRevoke: 0,
    rejectedDuringRevoke: 0,
    acceptedAfterRevokeReturned: 0,
    otherStatuses: {},
  };
  for (const s of samples) {
    const after = s.sentAt >= revokedAt[s.key]!;
    const ok = s.status >= 200 && s.status < 300;
    if (ok && after) out.acceptedAfterRevokeReturned++;
    else if (ok) out.acceptedBeforeRevoke++;
    else if (s.status === 401 && after) out.rejectedAfterRevoke++;
    else if (s.status === 401 && s.sentAt >= revokeStartedAt[s.key]!) out.rejectedDuringRevoke++;
    else {
      const k = String(s.status);
      out.otherStatuses[k] = (out.otherStatuses[k] ?? 0) + 1;
    }
  }
  return out;
}

export { percentile };
