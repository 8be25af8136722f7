/**
 * `/call` is described twice on purpose: TypeScript types and name lists in src/protocol/call.ts (the
 * Bridge's planner and santokit/client use them) and zod schemas in src/protocol/api/bridge.ts (the
 * OpenAPI document). This keeps their names the same, and the planner's accepted names with them.
 */
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { CALL_PARAMS, WHERE_OPERATORS } from '../../src/protocol/call.js';
import { CallParams, CallRequest, Where } from '../../src/protocol/api/bridge.js';
import { checkParamNames } from '../../src/bridge/sql/params.js';
import { OPS } from '../../src/protocol/release.js';

describe('/call: protocol names, OpenAPI schema and planner agree', () => {
  it('the OpenAPI params are the union of the params of every op', () => {
    const all = [...new Set(OPS.flatMap((op) => CALL_PARAMS[op]))].sort();
    expect(Object.keys((CallParams as z.ZodObject).shape).sort()).toEqual(all);
    expect(Object.keys((CallRequest as z.ZodObject).shape).sort()).toEqual(['params', 'path']);
  });

  it('the OpenAPI where operators are WHERE_OPERATORS', () => {
    const value = (Where as unknown as z.ZodRecord).valueType as z.ZodUnion;
    const ops = value.options.find((o) => o instanceof z.ZodObject) as z.ZodObject;
    expect(Object.keys(ops.shape).sort()).toEqual([...WHERE_OPERATORS].sort());
  });

  it('the planner accepts exactly CALL_PARAMS per op', () => {
    for (const op of OPS) {
      const ok = Object.fromEntries(CALL_PARAMS[op].map((k) => [k, undefined]));
      expect(() => checkParamNames(op, ok)).not.toThrow();
      for (const other of new Set(OPS.flatMap((o) => CALL_PARAMS[o]))) {
        if (!(CALL_PARAMS[op] as readonly string[]).includes(other))
          expect(() => checkParamNames(op, { [other]: 1 }), `${op} ${other}`).toThrow(/unknown parameter/);
      }
    }
  });
});
