import type { RouteInfo } from '../protocol/route-auth.js';

/**
 * The methods registered for a path (for `405 Method Not Allowed` and its `Allow` header), from the
 * app's route table: each route's URL pattern (`:param` = one segment, `*` = the rest) is compiled
 * once, on the first unmatched request.
 */
export class RouteMatcher {
  #compiled: Array<{ method: string; re: RegExp }> | undefined;
  constructor(readonly table: readonly RouteInfo[]) {}

  allowed(path: string): string[] {
    this.#compiled ??= this.table.map((r) => ({
      method: r.method,
      re: new RegExp(
        '^' +
          r.url
            .split('/')
            .map((seg) => (seg.startsWith(':') ? '[^/]+' : seg === '*' ? '.*' : seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
            .join('/') +
          '$',
      ),
    }));
    const methods = new Set<string>();
    for (const r of this.#compiled) if (r.re.test(path)) methods.add(r.method);
    return [...methods].sort();
  }
}
