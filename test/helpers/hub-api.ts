/**
 * The one client the tests use to call the Hub's HTTP API (no copies per test file).
 * `request(method, path, body?, token?)` sends anything (malformed bodies included, for the tests
 * that need them); `call(contract, input)` builds the request from a route contract of
 * src/protocol/api and types the answer with that contract's response schema.
 */
import type { z } from 'zod';
import type { RouteContract } from '../../src/protocol/api/define.js';

export interface HubResponse<T = any> {
  status: number;
  /** the parsed body (undefined when it is not JSON) */
  json: T;
  text: string;
  headers: Headers;
  requestId: string | null;
}

type In<T> = T extends z.ZodType ? z.input<T> : never;
type Success<C extends RouteContract> = {
  [S in keyof C['response']]: S extends 200 | 201 ? (C['response'][S] extends z.ZodType ? z.output<C['response'][S]> : never) : never;
}[keyof C['response']];
export type CallInput<C extends RouteContract> = (C['params'] extends z.ZodType ? { params: In<C['params']> } : { params?: undefined }) &
  (C['query'] extends z.ZodType ? { query?: In<C['query']> } : { query?: undefined }) &
  (C['body'] extends z.ZodType ? { body?: In<C['body']> } : { body?: undefined });

export class HubApi {
  constructor(
    readonly baseUrl: string,
    /** the default identity (a session token); null = none */
    readonly token: string | null = null,
    /** sees every response body (e.g. to scan them for secrets) */
    readonly onResponse?: (method: string, path: string, text: string) => void,
  ) {}

  /** The same client with another identity (a session token, or null/undefined for none). */
  as(token: string | null | undefined): HubApi {
    return new HubApi(this.baseUrl, token ?? null, this.onResponse);
  }

  async request<T = any>(method: string, path: string, body?: unknown, token: string | null | undefined = this.token): Promise<HubResponse<T>> {
    const r = await fetch(this.baseUrl + path, {
      method,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await r.text();
    this.onResponse?.(method, path, text);
    let json: any;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    return { status: r.status, json: json as T, text, headers: r.headers, requestId: r.headers.get('x-request-id') };
  }

  /** A route by its contract: path params filled in (encoded), the answer typed by the contract. */
  async call<C extends RouteContract>(c: C, input: CallInput<C>, token?: string | null): Promise<HubResponse<Success<C>>> {
    const params = (input.params ?? {}) as Record<string, string>;
    let path = c.url.replace(/:([A-Za-z]+)/g, (_m, p: string) => encodeURIComponent(params[p] ?? ''));
    const query = Object.entries((input.query ?? {}) as Record<string, string | undefined>).filter((e): e is [string, string] => e[1] !== undefined);
    if (query.length) path += '?' + new URLSearchParams(query).toString();
    return this.request(c.method, path, input.body, token === undefined ? this.token : token);
  }
}
