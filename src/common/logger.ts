import pino, { type LoggerOptions } from 'pino';

/** Paths pino replaces with "[redacted]": secrets never reach a log line. */
export const REDACT_PATHS = [
  'req.headers["x-santokit-api-key"]',
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["x-santokit-service-token"]',
  'res.headers["set-cookie"]',
  '*.password',
  '*.newPassword',
  '*.dbUrl',
  '*.db_url',
  '*.databaseUrl',
  '*.token',
  '*.apiKey',
  '*.api_key',
  '*.secret',
  '*.inviteCode',
  'password',
  'dbUrl',
  'token',
  'apiKey',
];

export function loggerOptions(name: string, level: string): LoggerOptions {
  return {
    name,
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    serializers: {
      req(req: { id: string; method: string; url: string; headers: Record<string, unknown>; ip?: string }) {
        return { id: req.id, method: req.method, url: stripQuery(req.url), headers: { ...req.headers }, ip: req.ip };
      },
    },
  };
}

/** Query strings are dropped from logged URLs: they are the easiest place for a secret to hide. */
export function stripQuery(url: string): string {
  const i = url.indexOf('?');
  return i < 0 ? url : url.slice(0, i) + '?…';
}

type LogArgs = [obj: unknown, msg?: string, ...args: unknown[]];
interface LoggerLike {
  level: string;
  isLevelEnabled(level: string): boolean;
  fatal(...a: LogArgs): void;
  error(...a: LogArgs): void;
  warn(...a: LogArgs): void;
  info(...a: LogArgs): void;
  debug(...a: LogArgs): void;
  trace(...a: LogArgs): void;
  child(bindings: Record<string, unknown>, opts?: Record<string, unknown>): LoggerLike;
}

/**
 * A request's logger (`req.log`) that becomes a real pino child only when something is logged
 * through it. pino builds a child eagerly (bindings serialized through redaction, level methods
 * rebuilt): on the success path of `/call` nothing logs per request, so that work was pure overhead.
 */
export class RequestLogger {
  #parent: LoggerLike;
  #bindings: Record<string, unknown>;
  #real: LoggerLike | undefined;

  constructor(parent: LoggerLike, bindings: Record<string, unknown>) {
    this.#parent = parent;
    this.#bindings = bindings;
  }

  #child(): LoggerLike {
    return (this.#real ??= this.#parent.child(this.#bindings));
  }

  get level(): string {
    return (this.#real ?? this.#parent).level;
  }

  set level(level: string) {
    this.#child().level = level;
  }

  isLevelEnabled(level: string): boolean {
    return (this.#real ?? this.#parent).isLevelEnabled(level);
  }

  #log(level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace', args: LogArgs): void {
    if (this.#real) this.#real[level](...args);
    else if (this.#parent.isLevelEnabled(level)) this.#child()[level](...args);
  }

  fatal(...args: LogArgs): void {
    this.#log('fatal', args);
  }
  error(...args: LogArgs): void {
    this.#log('error', args);
  }
  warn(...args: LogArgs): void {
    this.#log('warn', args);
  }
  info(...args: LogArgs): void {
    this.#log('info', args);
  }
  debug(...args: LogArgs): void {
    this.#log('debug', args);
  }
  trace(...args: LogArgs): void {
    this.#log('trace', args);
  }
  silent(): void {}

  child(bindings: Record<string, unknown>, opts?: Record<string, unknown>): LoggerLike {
    return this.#child().child(bindings, opts);
  }
}

/** A log destination: what pino writes its lines to. */
export interface LogDestination {
  write(line: string): unknown;
  flushSync?(): void;
}

/**
 * stdout for the server logs, with access lines batched: pino's own stdout destination issues a write
 * for (nearly) every line, and at thousands of requests per second one write per access line costs
 * more than the request's own logging work. Access lines (`writeBuffered`) are held until 8 KB have
 * accumulated or 50 ms have passed; any other line is written at once, together with whatever access
 * lines came before it (order is kept). Everything still buffered is written on exit.
 */
export function bufferedStdout(): LogDestination & { writeBuffered(line: string): void } {
  // one per process: Hub and Bridge in one process (`stk dev`) must not be two writers on one fd
  return (sharedStdout ??= createBufferedStdout());
}
let sharedStdout: (LogDestination & { writeBuffered(line: string): void }) | undefined;

function createBufferedStdout(): LogDestination & { writeBuffered(line: string): void } {
  const boom = pino.destination({ dest: 1, sync: false, minLength: 8 * 1024, maxWrite: 64 * 1024 }) as unknown as {
    write(s: string): boolean;
    flush(cb?: null): void;
    flushSync(): void;
    /** bytes buffered or being written */
    _len: number;
    _writing: boolean;
  };
  let timer: NodeJS.Timeout | undefined;
  // access lines: flushed every 50 ms until everything is written (a write in flight defers a flush)
  const arm = () => {
    if (!timer) {
      timer = setTimeout(tick, 50);
      timer.unref();
    }
  };
  const tick = () => {
    timer = undefined;
    if (boom._len > 0) {
      if (!boom._writing) boom.flush(null);
      arm();
    }
  };
  // a line that must go out now, behind a write in flight: written as soon as that write completes
  let urgent = false;
  (boom as unknown as NodeJS.EventEmitter).on('drain', () => {
    if (urgent && boom._len > 0 && !boom._writing) boom.flush(null);
    urgent = false;
  });
  return {
    write(line: string) {
      boom.write(line);
      if (!boom._writing) boom.flush(null);
      else urgent = true;
    },
    writeBuffered(line: string) {
      boom.write(line);
      arm();
    },
    flushSync() {
      boom.flushSync();
    },
  };
}
