import { describe, expect, it } from 'vitest';
import { MAX_JSON_DEPTH, jsonTooDeep } from '../../src/common/json-depth.js';

const nested = (d: number) => '['.repeat(d) + ']'.repeat(d);
/** a body whose deepest value is `d` levels inside the outer object (so `d + 1` in all) */
const body = (d: number) => JSON.stringify({ path: 'db/users/select', pad: 'y'.repeat(200), v: JSON.parse(nested(d)) });

describe('jsonTooDeep', () => {
  it(`allows exactly ${MAX_JSON_DEPTH} levels of objects and arrays`, () => {
    expect(jsonTooDeep(body(MAX_JSON_DEPTH - 1))).toBe(false);
    expect(jsonTooDeep(body(MAX_JSON_DEPTH))).toBe(true);
    expect(jsonTooDeep(nested(MAX_JSON_DEPTH))).toBe(false);
    expect(jsonTooDeep(nested(MAX_JSON_DEPTH + 1))).toBe(true);
    expect(jsonTooDeep('{"a":'.repeat(65) + '1' + '}'.repeat(65))).toBe(true);
  });

  it('does not count brackets inside strings, escaped quotes included', () => {
    expect(jsonTooDeep(JSON.stringify({ s: '['.repeat(500), t: '{'.repeat(100) }))).toBe(false);
    expect(jsonTooDeep(JSON.stringify({ s: 'a\\"' + '['.repeat(100) + '"', arr: [1, 2] }))).toBe(false);
    expect(jsonTooDeep(JSON.stringify({ s: '\\', deep: JSON.parse(nested(70)) }))).toBe(true);
    expect(jsonTooDeep(JSON.stringify({ s: '\\"]]]]]]', deep: JSON.parse(nested(70)) }))).toBe(true);
  });

  it('many shallow brackets are not depth', () => {
    expect(jsonTooDeep(JSON.stringify(Array.from({ length: 5000 }, () => ({ a: [1, { b: [] }] }))))).toBe(false);
  });

  it('stops at the first level past the bound (a 10 MB nested body is refused without a full pass)', () => {
    const deep = nested(5_000_000);
    expect(jsonTooDeep(deep)).toBe(true);
    // malformed text is left to the parser
    expect(jsonTooDeep('{"a": "unterminated ' + '['.repeat(300))).toBe(false);
  });
});
