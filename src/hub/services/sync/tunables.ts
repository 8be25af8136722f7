/** Sync timings, tunable through the environment (tests shorten them). */
const num = (v: string | undefined, d: number) => {
  const n = Number(v);
  return v !== undefined && v !== '' && Number.isFinite(n) && n >= 0 ? n : d;
};
export const HEARTBEAT_MS = num(process.env.STK_SYNC_HEARTBEAT_MS, 10_000);
/** a Bridge row not refreshed for this long no longer counts (its Hub is gone and it did not come back) */
export const PRESENCE_STALE_MS = num(process.env.STK_SYNC_PRESENCE_STALE_MS, HEARTBEAT_MS * 3);
export const GAP_WAIT_MS = num(process.env.STK_SYNC_GAP_WAIT_MS, 250);
export const POLL_MS = num(process.env.STK_SYNC_POLL_MS, 2000);
