import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import type { PGlite } from '@electric-sql/pglite';

/**
 * A PostgreSQL wire-protocol front for one PGlite instance that serves MANY client connections correctly.
 *
 * PGlite is a single session. pglite-socket's own multiplexer (`maxConnections > 1`) queues individual
 * protocol messages, so the extended-protocol messages of two connections interleave (A:Parse, B:Parse,
 * A:Bind …) and an error on one connection makes the backend skip the other's messages until Sync: under
 * concurrent load we saw `portal "" does not exist`. This front instead:
 *
 *  - cuts each connection's stream into batches that end at a synchronisation point (Sync, simple Query,
 *    Flush, CopyDone/CopyFail, FunctionCall) and runs a whole batch with one `execProtocolRaw` call;
 *  - gives the session to one connection at a time and lets it keep the session until the backend reports
 *    ReadyForQuery with status `I` (idle, outside a transaction). A transaction, a Parse/Describe/Flush
 *    round-trip or a COPY therefore never sees another connection's statements in between; other
 *    connections wait in FIFO order (like waiting on a lock);
 *  - when a connection goes away while it holds the session, sends Sync and ROLLBACK so the next one starts
 *    clean, and kills a connection that sits idle inside a transaction for `idleInTransactionMs` while
 *    others wait (like `idle_in_transaction_session_timeout`).
 *
 * Session state that is not transactional (SET without LOCAL, named prepared statements, temp tables) is
 * shared by all connections. postgres.js and pg name their prepared statements per connection (random
 * prefix / unnamed), so they don't collide.
 */

const SSL_REQUEST = 80877103;
const GSSENC_REQUEST = 80877104;
const CANCEL_REQUEST = 80877102;
const PROTOCOL_3 = 196608;
const MAX_MESSAGE = 1 << 30;

/** Frontend message types after which the client waits for an answer. */
const BATCH_END = new Set(['S', 'Q', 'H', 'c', 'f', 'F', 'p']);

const SYNC = Buffer.from([0x53, 0, 0, 0, 4]);

function queryMessage(sql: string): Buffer {
  const body = Buffer.from(sql + '\0', 'utf8');
  const b = Buffer.alloc(5 + body.length);
  b.write('Q', 0, 'latin1');
  b.writeInt32BE(4 + body.length, 1);
  body.copy(b, 5);
  return b;
}

function errorMessage(severity: 'FATAL' | 'ERROR', code: string, message: string): Buffer {
  const fields = Buffer.from(`S${severity}\0V${severity}\0C${code}\0M${message}\0\0`, 'utf8');
  const b = Buffer.alloc(5 + fields.length);
  b.write('E', 0, 'latin1');
  b.writeInt32BE(4 + fields.length, 1);
  fields.copy(b, 5);
  return b;
}

/**
 * The transaction status of the backend after `out`: 'I' | 'T' | 'E' when `out` ends with ReadyForQuery,
 * null when the backend still expects more from this client (Flush, COPY, or an empty answer).
 */
export function readyStatusAtEnd(out: Uint8Array): string | null {
  let i = 0;
  let last: string | null = null;
  while (i + 5 <= out.length) {
    const type = out[i]!;
    const len = ((out[i + 1]! << 24) | (out[i + 2]! << 16) | (out[i + 3]! << 8) | out[i + 4]!) >>> 0;
    const next = i + 1 + len;
    last = type === 0x5a /* Z */ && len === 5 && next <= out.length ? String.fromCharCode(out[i + 5]!) : null;
    i = next;
  }
  return i === out.length ? last : null;
}

interface Conn {
  id: number;
  socket: Socket;
  buf: Buffer;
  started: boolean;
  batch: Buffer[];
  /** this connection's work, strictly in order */
  chain: Promise<void>;
  closed: boolean;
  /** owns the session and the backend is not idle (transaction, pending Flush/COPY) */
  holding: boolean;
  idleTimer?: NodeJS.Timeout;
  /** resolves once the socket closed and the cleanup ran */
  gone: Promise<void>;
}

export interface PgMuxOptions {
  db: PGlite;
  host?: string;
  port?: number;
  /** a connection idle inside a transaction this long while others wait is terminated (default 60 s) */
  idleInTransactionMs?: number;
  onWarning?: (message: string) => void;
}

export class PgMux {
  private readonly db: PGlite;
  private server: Server | null = null;
  private readonly conns = new Set<Conn>();
  private owner: Conn | null = null;
  private readonly waiters: Array<{ conn: Conn; grant: () => void }> = [];
  private nextId = 1;
  private readonly idleInTransactionMs: number;
  private readonly warn: (m: string) => void;
  port = 0;

  constructor(private readonly opts: PgMuxOptions) {
    this.db = opts.db;
    this.idleInTransactionMs = opts.idleInTransactionMs ?? 60_000;
    this.warn = opts.onWarning ?? ((m) => process.stderr.write(`embedded postgres: ${m}\n`));
  }

  async start(): Promise<number> {
    await this.db.waitReady;
    const server = createServer((socket) => this.accept(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.port ?? 0, this.opts.host ?? '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.port = (server.address() as AddressInfo).port;
    return this.port;
  }

  stats() {
    return { connections: this.conns.size, waiting: this.waiters.length, busy: this.owner !== null };
  }

  /** Stops listening, closes every client connection (rolling back what they held) and waits for that. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = null;
    const closed = server ? new Promise<void>((r) => server.close(() => r())) : Promise.resolve();
    const conns = [...this.conns];
    for (const c of conns) c.socket.destroy();
    await Promise.all(conns.map((c) => c.gone));
    await closed;
  }

  private accept(socket: Socket): void {
    if (!this.server) {
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    let gone!: () => void;
    const conn: Conn = {
      id: this.nextId++,
      socket,
      buf: Buffer.alloc(0),
      started: false,
      batch: [],
      chain: Promise.resolve(),
      closed: false,
      holding: false,
      gone: new Promise<void>((r) => (gone = r)),
    };
    this.conns.add(conn);
    socket.on('data', (chunk) => this.onData(conn, chunk));
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      conn.closed = true;
      if (conn.idleTimer) clearTimeout(conn.idleTimer);
      this.enqueue(conn, () => this.finish(conn));
      void conn.chain.then(() => {
        this.conns.delete(conn);
        gone();
      });
    });
  }

  private enqueue(conn: Conn, work: () => Promise<void>): void {
    conn.chain = conn.chain.then(work).catch((err: unknown) => {
      this.warn(`connection #${conn.id}: ${(err as Error).message}`);
      conn.socket.destroy();
      return this.finish(conn);
    });
  }

  private fail(conn: Conn, message: string): void {
    if (!conn.socket.destroyed) conn.socket.end(errorMessage('FATAL', '08P01', message));
    conn.socket.destroy();
  }

  private onData(conn: Conn, chunk: Buffer): void {
    conn.buf = conn.buf.length ? Buffer.concat([conn.buf, chunk]) : chunk;
    const buf = conn.buf;
    let off = 0;
    while (!conn.closed) {
      if (!conn.started) {
        if (buf.length - off < 8) break;
        const len = buf.readInt32BE(off);
        const code = buf.readInt32BE(off + 4);
        if (len < 8 || len > 10_000) return this.fail(conn, 'invalid startup packet');
        if (buf.length - off < len) break;
        const packet = buf.subarray(off, off + len);
        off += len;
        if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
          conn.socket.write('N'); // no TLS on the embedded server; the client continues in plain text
          continue;
        }
        if (code === CANCEL_REQUEST) {
          conn.socket.destroy(); // a query runs to completion; cancellation is not supported
          return;
        }
        if (code !== PROTOCOL_3) return this.fail(conn, 'unsupported frontend protocol (3.0 required)');
        conn.started = true;
        const startup = Buffer.from(packet);
        this.enqueue(conn, () => this.exec(conn, startup));
        continue;
      }
      if (buf.length - off < 5) break;
      const type = String.fromCharCode(buf[off]!);
      const len = buf.readInt32BE(off + 1);
      if (len < 4 || len > MAX_MESSAGE) return this.fail(conn, 'invalid message length');
      if (buf.length - off < 1 + len) break;
      const msg = buf.subarray(off, off + 1 + len);
      off += 1 + len;
      if (type === 'X') {
        // Terminate: the session is shared, so it is not forwarded; closing the socket releases what we held
        conn.socket.end();
        break;
      }
      conn.batch.push(msg);
      if (BATCH_END.has(type)) {
        const bytes = Buffer.concat(conn.batch);
        conn.batch = [];
        this.enqueue(conn, () => this.exec(conn, bytes));
      }
    }
    conn.buf = off >= buf.length ? Buffer.alloc(0) : buf.subarray(off);
  }

  private acquire(conn: Conn): Promise<void> | undefined {
    if (this.owner === conn) return undefined;
    if (this.owner === null) {
      this.owner = conn;
      return undefined;
    }
    return new Promise<void>((grant) => this.waiters.push({ conn, grant }));
  }

  private release(conn: Conn): void {
    if (this.owner !== conn) return;
    conn.holding = false;
    const next = this.waiters.shift();
    this.owner = next ? next.conn : null;
    if (next) next.grant();
  }

  private async exec(conn: Conn, bytes: Buffer): Promise<void> {
    if (conn.closed) return;
    const wait = this.acquire(conn);
    if (wait) await wait;
    if (conn.idleTimer) {
      clearTimeout(conn.idleTimer);
      conn.idleTimer = undefined;
    }
    if (conn.closed) return this.finish(conn);
    const out = await this.db.execProtocolRaw(bytes);
    if (!conn.socket.destroyed) conn.socket.write(Buffer.from(out));
    if (readyStatusAtEnd(out) === 'I') {
      this.release(conn);
      return;
    }
    conn.holding = true;
    this.armIdleTimer(conn);
  }

  /** Terminates a holder that stays idle inside a transaction while other connections wait. */
  private armIdleTimer(conn: Conn): void {
    conn.idleTimer = setTimeout(() => {
      conn.idleTimer = undefined;
      if (conn.closed || this.owner !== conn || !conn.holding) return;
      if (this.waiters.length === 0) return this.armIdleTimer(conn);
      this.warn(
        `terminating connection #${conn.id}: idle inside a transaction for ${this.idleInTransactionMs} ms while ${this.waiters.length} other connection(s) waited`,
      );
      this.fail(conn, 'terminating connection due to idle-in-transaction timeout (the embedded PostgreSQL runs one transaction at a time)');
    }, this.idleInTransactionMs);
    conn.idleTimer.unref();
  }

  /** The connection is gone: if it held the session, end its pending work and transaction, then pass it on. */
  private async finish(conn: Conn): Promise<void> {
    if (this.owner !== conn) return;
    if (conn.holding) {
      try {
        let status = readyStatusAtEnd(await this.db.execProtocolRaw(SYNC));
        if (status !== 'I') status = readyStatusAtEnd(await this.db.execProtocolRaw(queryMessage('ROLLBACK')));
        if (status !== 'I') this.warn(`connection #${conn.id} left the session in state ${status ?? 'unknown'}`);
      } catch (err) {
        this.warn(`cleanup after connection #${conn.id} failed: ${(err as Error).message}`);
      }
    }
    this.release(conn);
  }
}
