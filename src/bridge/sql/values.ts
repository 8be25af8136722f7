/**
 * Caller values → bind-parameter text, type-checked against the column's declared type.
 * Every converter is built once per column when a release is compiled; on the request path a value
 * costs one function call. Converters take a non-null value and return the parameter text, or
 * INVALID when the value does not fit the type (the caller turns that into a 400 naming the column).
 * Parameters always travel as text with an explicit cast in the SQL (see `pgType`).
 */
import { PG_TYPES, type ColumnType, type TypeSpec } from '../../protocol/release.js';

export const INVALID: unique symbol = Symbol('invalid');
export type Invalid = typeof INVALID;
export type Converter = (v: unknown) => string | Invalid;
/** converts one array element to its normalized JSON value */
type Normalizer = (v: unknown) => unknown;

const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;
const INT64_MIN = -9223372036854775808n;
const INT64_MAX = 9223372036854775807n;
const BIGINT_RE = /^-?\d{1,19}$/;
const DECIMAL_RE = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,4})?$/;
/** ISO 8601 date or date-time; the time zone may be omitted (the Bridge's sessions run in UTC) */
const TIMESTAMP_RE = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|z|[+-]\d{2}(?::?\d{2})?)?)?$/;
/** standard base64, padding optional */
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$/;

/** PostgreSQL type used in casts for a column of this logical type (`timestamptz`: the short spelling in SQL text). */
export function pgType(type: ColumnType): string {
  return type === 'timestamp' ? 'timestamptz' : PG_TYPES[type];
}

/** What a caller should send, for error messages. */
export function typeLabel(spec: TypeSpec): string {
  switch (spec.type) {
    case 'string':
      return 'a string';
    case 'int':
      return 'an integer in int32 range';
    case 'bigint':
      return 'a bigint (a string of digits or a safe integer)';
    case 'float':
      return 'a number';
    case 'decimal':
      return 'a decimal (a numeric string or a number)';
    case 'boolean':
      return 'a boolean';
    case 'json':
      return 'any JSON value';
    case 'timestamp':
      return 'an ISO-8601 timestamp string';
    case 'bytes':
      return 'a base64 string';
    case 'array':
      return spec.items ? `an array of ${stripArticle(typeLabel(spec.items))}` : 'an array';
  }
}

function stripArticle(s: string): string {
  return s.replace(/^(an?|any) /, '');
}

const isString = (v: unknown): v is string => typeof v === 'string';

function checkString(v: unknown): string | Invalid {
  return isString(v) && v.indexOf('\u0000') === -1 ? v : INVALID;
}

function checkInt(v: unknown): number | Invalid {
  return typeof v === 'number' && Number.isInteger(v) && v >= INT32_MIN && v <= INT32_MAX ? v : INVALID;
}

function checkBigint(v: unknown): string | Invalid {
  if (typeof v === 'number') return Number.isSafeInteger(v) ? String(v) : INVALID;
  if (!isString(v) || !BIGINT_RE.test(v)) return INVALID;
  const b = BigInt(v);
  return b >= INT64_MIN && b <= INT64_MAX ? b.toString() : INVALID;
}

function checkFloat(v: unknown): number | Invalid {
  return typeof v === 'number' && Number.isFinite(v) ? v : INVALID;
}

function checkDecimal(v: unknown): string | Invalid {
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : INVALID;
  return isString(v) && v.length <= 1000 && DECIMAL_RE.test(v) ? v : INVALID;
}

function checkTimestamp(v: unknown): string | Invalid {
  return isString(v) && v.length <= 40 && TIMESTAMP_RE.test(v) && !Number.isNaN(Date.parse(v.length === 10 ? v : v.replace(' ', 'T'))) ? v : INVALID;
}

function checkBase64(v: unknown): string | Invalid {
  return isString(v) && BASE64_RE.test(v) ? v : INVALID;
}

/** JSON value normalizer for array elements (arrays are stored as jsonb). */
function normalizer(spec: TypeSpec | undefined): Normalizer {
  if (!spec) return (v) => (v === undefined ? INVALID : v);
  switch (spec.type) {
    case 'string':
      return checkString;
    case 'int':
      return checkInt;
    case 'bigint':
      return checkBigint;
    case 'float':
      return checkFloat;
    case 'decimal':
      return checkDecimal;
    case 'boolean':
      return (v) => (typeof v === 'boolean' ? v : INVALID);
    case 'json':
      return (v) => (v === undefined ? INVALID : v);
    case 'timestamp':
      return checkTimestamp;
    case 'bytes':
      return checkBase64;
    case 'array': {
      const item = normalizer(spec.items);
      return (v) => {
        if (!Array.isArray(v)) return INVALID;
        const out = new Array<unknown>(v.length);
        for (let i = 0; i < v.length; i++) {
          const x: unknown = v[i];
          if (x === null && spec.items?.type !== 'json') return INVALID;
          const n = x === null ? null : item(x);
          if (n === INVALID) return INVALID;
          out[i] = n;
        }
        return out;
      };
    }
  }
}

/** Builds the converter of a column: non-null caller value → parameter text, or INVALID. */
export function converter(spec: TypeSpec): Converter {
  switch (spec.type) {
    case 'string':
      return checkString;
    case 'int':
      return (v) => {
        const n = checkInt(v);
        return n === INVALID ? n : String(n);
      };
    case 'bigint':
      return checkBigint;
    case 'float':
      return (v) => {
        const n = checkFloat(v);
        return n === INVALID ? n : String(n);
      };
    case 'decimal':
      return checkDecimal;
    case 'boolean':
      return (v) => (v === true ? 'true' : v === false ? 'false' : INVALID);
    case 'json':
      return (v) => (v === undefined ? INVALID : JSON.stringify(v));
    case 'timestamp':
      return checkTimestamp;
    case 'bytes':
      return (v) => {
        const s = checkBase64(v);
        return s === INVALID ? s : '\\x' + Buffer.from(s, 'base64').toString('hex');
      };
    case 'array': {
      const n = normalizer(spec);
      return (v) => {
        const out = n(v);
        return out === INVALID ? INVALID : JSON.stringify(out);
      };
    }
  }
}

/** A PostgreSQL array literal of already-converted parameter texts (for `= ANY($n::type[])`). */
export function arrayLiteral(items: string[]): string {
  let s = '{';
  for (let i = 0; i < items.length; i++) {
    if (i) s += ',';
    s += '"' + items[i]!.replace(/\\/g, '\\\\').replace(/"/g, '\\"') + '"';
  }
  return s + '}';
}
