import { fieldProblems } from '../protocol/errors.js';
import { ApiError, CliError } from './errors.js';
import { resolveHubUrl, resolveToken } from './config.js';

export interface ClientOptions {
  hub?: string;
  /** send no session token (login) */
  anonymous?: boolean;
  /** the flag a refused API field was given with (`expiresIn` → `--expires-in`), to name it in the message */
  flagFor?: (field: string) => string | undefined;
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * The Hub's message with each refused field (`details.fields`) named as the user typed it: the flag
 * it came from. Only whole words are replaced, with or without the `body.`/`query.` prefix.
 */
export function withFlagNames(message: string, details: unknown, flagFor: (field: string) => string | undefined): string {
  for (const p of fieldProblems(details)) {
    const flag = flagFor(p.field);
    if (!flag) continue;
    message = message.replace(new RegExp(`(?<![\\w.-])(?:${escapeRegExp(p.in)}\\.)?${escapeRegExp(p.field)}(?![\\w-])`, 'g'), flag);
  }
  return message;
}

/** A thin JSON client for the Hub API. Non-2xx → ApiError carrying status and code. */
export class HubClient {
  readonly hubUrl: string;
  readonly #token?: string;
  readonly #anonymous: boolean;
  readonly #flagFor: ClientOptions['flagFor'];

  constructor(opts: ClientOptions = {}) {
    this.hubUrl = resolveHubUrl(opts.hub);
    this.#flagFor = opts.flagFor;
    this.#anonymous = Boolean(opts.anonymous);
    this.#token = opts.anonymous ? undefined : resolveToken(this.hubUrl);
  }

  async request<T = unknown>(method: string, path: string, body?: unknown, query?: Record<string, string | number | undefined>): Promise<T> {
    let url = this.hubUrl + path;
    if (query) {
      const qs = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') qs.set(k, String(v));
      const s = qs.toString();
      if (s) url += '?' + s;
    }
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.#token) headers.authorization = `Bearer ${this.#token}`;
    let res: Response;
    try {
      res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (e) {
      const cause = (e as { cause?: { code?: string } }).cause?.code;
      throw new CliError(`cannot reach the Hub at ${this.hubUrl}${cause ? ` (${cause})` : ''}: is it running? (set --hub or STK_HUB_URL)`);
    }
    const text = await res.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const err = (json as { error?: { code?: string; message?: string; requestId?: string; details?: unknown } } | undefined)?.error;
      let msg = err?.message ?? (res.statusText || 'request failed');
      if (this.#flagFor && err?.details !== undefined) msg = withFlagNames(msg, err.details, this.#flagFor);
      // the Hub's own message usually says so already: the hint appears once
      if (res.status === 401 && !this.#token && !this.#anonymous && !/stk login/.test(msg)) msg += " — run 'stk login' first";
      throw new ApiError(msg, res.status, err?.code ?? 'HTTP_' + res.status, err?.requestId, err?.details);
    }
    return json as T;
  }

  get<T = unknown>(path: string, query?: Record<string, string | number | undefined>) {
    return this.request<T>('GET', path, undefined, query);
  }
  post<T = unknown>(path: string, body?: unknown) {
    return this.request<T>('POST', path, body ?? {});
  }
  put<T = unknown>(path: string, body?: unknown) {
    return this.request<T>('PUT', path, body ?? {});
  }
  patch<T = unknown>(path: string, body?: unknown) {
    return this.request<T>('PATCH', path, body ?? {});
  }
  delete<T = unknown>(path: string, query?: Record<string, string | number | undefined>) {
    return this.request<T>('DELETE', path, undefined, query);
  }
}

export const enc = encodeURIComponent;
