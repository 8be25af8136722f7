import type { IncomingMessage } from 'node:http';

interface Slow {
  payload: NodeJS.EventEmitter;
  deadline: number;
}

/**
 * The deadline of request bodies still arriving (slowloris: a body trickled in byte by byte), kept
 * without a timer per request: Node's own request timeout no longer covers a request once its route
 * runs, and nearly every body is still "arriving" when the route starts reading it (the route runs
 * from the headers, the rest of the same packet is parsed right after), so a per-request
 * `setTimeout` + two listeners was paid by every POST. Here:
 *
 * - `watch()` only remembers the request in an array (no timer, no listener);
 * - once per event-loop turn (one shared `setImmediate`) the requests whose body completed in the
 *   meantime — nearly all — are dropped, and the rest become "slow", with their deadline;
 * - one interval (only while a slow body exists) ends each slow body still incomplete past its
 *   deadline by emitting `onTimeout()`'s error on its payload stream: the body reader stops and the
 *   error handler answers it (408) as before.
 *
 * A body is cut between `timeoutMs` and `timeoutMs + sweepMs` after its route started reading it.
 */
export class BodyDeadlines {
  readonly #fresh: Array<IncomingMessage | NodeJS.EventEmitter> = [];
  readonly #slow = new Map<IncomingMessage, Slow>();
  #scheduled = false;
  #timer: NodeJS.Timeout | undefined;
  readonly #sweepMs: number;

  constructor(
    readonly timeoutMs: number,
    readonly onTimeout: () => Error,
  ) {
    this.#sweepMs = Math.max(10, Math.min(1000, Math.floor(timeoutMs / 4)));
  }

  /** Bounds the body of `raw` (read through `payload`) to the deadline. */
  watch(raw: IncomingMessage, payload: NodeJS.EventEmitter): void {
    this.#fresh.push(raw, payload);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#promote);
    }
  }

  /** requests whose body is still arriving a turn after their route began reading it */
  get slow(): number {
    return this.#slow.size;
  }

  close(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#slow.clear();
    this.#fresh.length = 0;
  }

  readonly #promote = (): void => {
    this.#scheduled = false;
    const fresh = this.#fresh;
    const deadline = Date.now() + this.timeoutMs;
    for (let i = 0; i < fresh.length; i += 2) {
      const raw = fresh[i] as IncomingMessage;
      if (!raw.complete && !raw.destroyed) this.#slow.set(raw, { payload: fresh[i + 1] as NodeJS.EventEmitter, deadline });
    }
    fresh.length = 0;
    if (this.#slow.size > 0 && this.#timer === undefined) {
      this.#timer = setInterval(this.#sweep, this.#sweepMs);
      this.#timer.unref();
    }
  };

  readonly #sweep = (): void => {
    const now = Date.now();
    for (const [raw, s] of this.#slow) {
      if (raw.complete || raw.destroyed) this.#slow.delete(raw);
      else if (now >= s.deadline) {
        this.#slow.delete(raw);
        s.payload.emit('error', this.onTimeout());
      }
    }
    if (this.#slow.size === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  };
}
