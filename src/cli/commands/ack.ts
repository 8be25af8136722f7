import type { AckResult } from '../../protocol/api/define.js';
import { warn } from '../output.js';

/**
 * For changes a lagging Bridge does not undo (apply, promote, rollback, connection set): prints the
 * Bridge count on stderr, or warns naming the Bridges that did not load the change in time. The
 * command still exits 0: the change is committed and they apply it once they catch up.
 */
/** `ack` in Hub responses: how many Bridges applied a change before the Hub answered. */
export function reportBridgeAck(ack: AckResult | null | undefined, what: string, quiet = false): void {
  if (!ack) return;
  if (ack.lagging.length === 0) {
    if (!quiet) process.stderr.write(`  Bridges: ${ack.acked}/${ack.bridges} confirmed${ack.bridges ? '' : ' (none connected)'}\n`);
    return;
  }
  warn(
    `${what}, but ${ack.lagging.length} of ${ack.bridges} Bridge(s) did not load it in time: ${ack.lagging.join(', ')}. ` +
      'They keep serving the previous state until they catch up (check their connection to the Hub).',
  );
}
