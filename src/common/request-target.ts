/**
 * The one request-target policy of Hub and Bridge, applied before routing (Fastify `rewriteUrl`), so
 * the router and every decision after it see one canonical path (RFC 3986 §6.2.2, like Envoy's
 * `normalize_path` + `merge_slashes` with escaped slashes rejected):
 * - only origin-form targets (`/path?query`); absolute-form (`http://host/path`), authority-form and
 *   `*` are refused;
 * - `%2F`, `%5C`, `\` and NUL in the path are refused (they would make one path mean two things);
 * - percent-encoded unreserved characters are decoded (`/%69nternal` is `/internal`);
 * - duplicate slashes merge and dot segments (`/./`, `/a/../`, also encoded) resolve; a `..` above
 *   the root is refused.
 * Returns the canonical target, or `{ error }` for a target that is refused.
 */
export function canonicalTarget(raw: string): string | { error: string } {
  if (raw.charCodeAt(0) !== 47 /* / */) return { error: 'request target must be a path starting with "/" (absolute-form and authority-form are not accepted)' };
  const q = raw.indexOf('?');
  const path = q === -1 ? raw : raw.slice(0, q);
  // fast path: nothing to decode, merge or resolve
  if (!SUSPECT.test(path)) return raw;
  if (FORBIDDEN.test(path)) return { error: 'encoded "/" or "\\", backslashes and NUL are not allowed in the path' };
  const decoded = path.replace(PCT_UNRESERVED, (m, hex: string) => {
    const c = String.fromCharCode(parseInt(hex, 16));
    return UNRESERVED.test(c) ? c : m.toUpperCase();
  });
  const out: string[] = [];
  const segs = decoded.split('/');
  for (let i = 1; i < segs.length; i++) {
    const s = segs[i]!;
    const last = i === segs.length - 1;
    if (s === '.' || (s === '' && !last)) {
      if (last) out.push('');
      continue;
    }
    if (s === '..') {
      if (out.length === 0) return { error: 'dot segments may not climb above the root' };
      out.pop();
      if (last) out.push('');
      continue;
    }
    out.push(s);
  }
  const canon = '/' + out.join('/');
  return q === -1 ? canon : canon + raw.slice(q);
}

const SUSPECT = /%|\/\/|\/\.|\\|\0/;
const FORBIDDEN = /%2f|%5c|%00|\\|\0/i;
const PCT_UNRESERVED = /%([0-9A-Fa-f]{2})/g;
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;
