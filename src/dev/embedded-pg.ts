import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

/**
 * The embedded PostgreSQL of `stk dev`: PGlite (persisted under a data dir) behind the multiplexing wire
 * front in pg-mux.ts, running in a worker thread so a long query never blocks the Hub's and the Bridge's
 * event loop (PGlite executes synchronously inside WebAssembly).
 *
 * The worker runs this same module file: it checks `workerData` at load time. Keep the static imports of
 * this file to node built-ins so the worker loads nothing else.
 */

const WORKER_KEY = 'stkDevEmbeddedPg';

export interface EmbeddedPgOptions {
  dataDir: string;
  host: string;
  port: number;
  idleInTransactionMs?: number;
}

export interface EmbeddedPg {
  host: string;
  port: number;
  /** connection URL without a password (the embedded server accepts any) */
  url: string;
  stop(): Promise<void>;
}

type FromWorker =
  { type: 'ready'; port: number } | { type: 'error'; message: string; code?: string } | { type: 'warning'; message: string } | { type: 'stopped' };

export async function startEmbeddedPg(o: EmbeddedPgOptions, onWarning: (m: string) => void = () => {}): Promise<EmbeddedPg> {
  const worker = new Worker(new URL(import.meta.url), { workerData: { [WORKER_KEY]: o } });
  let exited = false;
  const exit = new Promise<number>((r) => worker.once('exit', (code) => ((exited = true), r(code))));
  const port = await new Promise<number>((resolve, reject) => {
    worker.on('message', (m: FromWorker) => {
      if (m.type === 'ready') resolve(m.port);
      else if (m.type === 'error') reject(Object.assign(new Error(m.message), { code: m.code }));
      else if (m.type === 'warning') onWarning(m.message);
    });
    worker.once('error', reject);
    void exit.then((code) => reject(new Error(`the embedded PostgreSQL worker exited (code ${code}) before it was ready`)));
  });
  return {
    host: o.host,
    port,
    url: `postgres://postgres@${o.host}:${port}/postgres`,
    async stop() {
      if (exited) return;
      worker.postMessage({ type: 'stop' });
      const timer = setTimeout(() => void worker.terminate(), 15_000);
      await exit;
      clearTimeout(timer);
    },
  };
}

async function workerMain(o: EmbeddedPgOptions): Promise<void> {
  const port = parentPort!;
  const post = (m: FromWorker) => port.postMessage(m);
  let db: import('@electric-sql/pglite').PGlite | undefined;
  try {
    const { PGlite } = await import('@electric-sql/pglite');
    const { PgMux } = await import('./pg-mux.js');
    db = await PGlite.create({ dataDir: o.dataDir });
    const mux = new PgMux({
      db,
      host: o.host,
      port: o.port,
      idleInTransactionMs: o.idleInTransactionMs,
      onWarning: (message) => post({ type: 'warning', message }),
    });
    const actual = await mux.start();
    port.on('message', (m: { type: string }) => {
      if (m.type !== 'stop') return;
      void (async () => {
        await mux.stop().catch((e: Error) => post({ type: 'warning', message: `stopping the wire server: ${e.message}` }));
        await db!.close().catch((e: Error) => post({ type: 'warning', message: `closing PGlite: ${e.message}` }));
        post({ type: 'stopped' });
        port.close();
      })();
    });
    post({ type: 'ready', port: actual });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    await db?.close().catch(() => {});
    post({ type: 'error', message: err.message, code: err.code });
    port.close();
  }
}

if (!isMainThread && workerData && typeof workerData === 'object' && WORKER_KEY in workerData) {
  void workerMain((workerData as Record<string, EmbeddedPgOptions>)[WORKER_KEY]!);
}
