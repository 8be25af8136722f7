/**
 * The counting side of /metrics (src/common/metric-cells.ts) and its settings
 * (src/common/metrics-config.ts, read by both processes).
 */
import { describe, expect, it } from 'vitest';
import { loadBridgeConfig } from '../../src/bridge/config.js';
import { ConfigError, loadHubConfig } from '../../src/hub/config.js';
import { counterMap, HistogramCell, statusClass } from '../../src/common/metric-cells.js';

describe('metric cells', () => {
  it('a histogram bucket counts values up to and including its bound (Prometheus le)', () => {
    const h = new HistogramCell({}, [0.1, 1]);
    for (const v of [0.05, 0.1, 0.100001, 1, 7]) h.observe(v);
    expect([...h.counts]).toEqual([2, 2, 1]); // ≤0.1, ≤1, +Inf (non-cumulative)
    expect(h.count).toBe(5);
    expect(h.sum).toBeCloseTo(8.250001);
  });

  it('one cell per label values, the same object every time', () => {
    const m = counterMap(['route', 'code']);
    const a = m.get('/call', 'X');
    a.n++;
    m.get('/call', 'X').n++;
    m.get('/call', 'Y').n++;
    expect(m.get('/call', 'X')).toBe(a);
    expect([...m.values()].map((c) => [c.labels, c.n])).toEqual([
      [{ route: '/call', code: 'X' }, 2],
      [{ route: '/call', code: 'Y' }, 1],
    ]);
    expect([statusClass(200), statusClass(404), statusClass(503), statusClass(99), statusClass(700)]).toEqual(['2xx', '4xx', '5xx', 'other', 'other']);
  });
});

describe('metrics settings', () => {
  const BRIDGE = { STK_SERVICE_TOKEN: 'bridge-token-xxxxxxxx' };
  const HUB = { STK_SECRET_KEY: 'ab'.repeat(32), STK_SERVICE_TOKEN: 'hub-token-xxxxxxxxxxxx' };

  it('off by default; on with STK_METRICS_PORT, on loopback unless told otherwise', () => {
    expect(loadBridgeConfig(BRIDGE).metrics).toEqual({ port: null, host: '127.0.0.1', token: null, perEnv: false });
    expect(loadHubConfig({ ...HUB, STK_METRICS_PORT: '9464' }).metrics).toEqual({ port: 9464, host: '127.0.0.1', token: null, perEnv: false });
    const token = 'x'.repeat(32);
    expect(
      loadBridgeConfig({ ...BRIDGE, STK_METRICS_PORT: '9465', STK_METRICS_HOST: '0.0.0.0', STK_METRICS_TOKEN: token, STK_METRICS_PER_ENV: '1' }).metrics,
    ).toEqual({ port: 9465, host: '0.0.0.0', token, perEnv: true });
  });

  it('a token without a port, a short token or a bad port is refused at start (the token never quoted)', () => {
    expect(() => loadBridgeConfig({ ...BRIDGE, STK_METRICS_TOKEN: 'y'.repeat(32) })).toThrow(/STK_METRICS_TOKEN is set but STK_METRICS_PORT is not/);
    expect(() => loadHubConfig({ ...HUB, STK_METRICS_TOKEN: 'y'.repeat(32) })).toThrow(ConfigError);
    let msg = '';
    try {
      loadBridgeConfig({ ...BRIDGE, STK_METRICS_PORT: '9464', STK_METRICS_TOKEN: 'short-secret' });
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/STK_METRICS_TOKEN: must be at least 16 characters/);
    expect(msg).not.toContain('short-secret');
    expect(() => loadBridgeConfig({ ...BRIDGE, STK_METRICS_PORT: '70000' })).toThrow(/STK_METRICS_PORT: must be a port number/);
  });
});
