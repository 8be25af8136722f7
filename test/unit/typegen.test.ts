/**
 * `stk gen types`' renderer (src/cli/typegen.ts) on a schema with every column type, each id generator
 * kind and permission rules that narrow columns, so each line of the output is what the Bridge does.
 * examples/basic's types are compiled and used against a live Bridge in test/integration/typed-client.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { parseSchema } from '../../src/hub/services/apply/schema.js';
import { parsePermissions } from '../../src/hub/services/apply/permissions.js';
import { renderTypes } from '../../src/cli/typegen.js';
import type { ReleaseIR } from '../../src/protocol/release.js';

const schema = parseSchema([
  {
    file: 'schema/app.yaml',
    content: `version: 1
tables:
  accounts:
    id: { name: code, generate: client }
    columns:
      owner: { type: string }
      secret_note: { type: string, nullable: true }
  events:
    id: { generate: auto_increment }
    columns:
      account: { type: string, references: { table: accounts, column: code, as: acct } }
      n: { type: int }
      big: { type: bigint, nullable: true }
      ratio: { type: float, default: 0 }
      price: { type: decimal, nullable: true }
      ok: { type: boolean, default: true }
      at: { type: timestamp, default: now }
      blob: { type: bytes, nullable: true }
      doc: { type: json, nullable: true }
      tags: { type: array, items: string, nullable: true }
      grid: { type: array, items: { type: array, items: int }, nullable: true }
  audit:
    connection: other
    columns:
      note: { type: string }
`,
  },
]);
const permissions = parsePermissions(
  `tables:
  accounts:
    select:
      - roles: [support]
        columns: [owner]
      - roles: [public]
    insert: { roles: [support] , columns: [owner] }
  events:
    select:
      - roles: [support, analyst]
        columns: [account, n, at]
    update:
      - roles: [analyst]
        columns: [n]
  audit:
    select: { roles: [public] }
`,
  schema,
);
const release: ReleaseIR = {
  releaseId: '01J9ZZZZZZZZZZZZZZZZZZZZZZ',
  project: 'shop',
  ref: 'v1 */ evil',
  createdAt: '2026-01-01T00:00:00.000Z',
  schema,
  permissions,
  connections: ['main', 'other'],
};
const text = renderTypes(release, { project: 'shop', env: 'dev' });
const block = (name: string) => {
  const m = new RegExp(`\\n    ${name}: \\{\\n([\\s\\S]*?)\\n    \\};`).exec(text);
  if (!m) throw new Error(`no block ${name} in\n${text}`);
  return m[1]!;
};

describe('stk gen types: a release as TypeScript', () => {
  it('answer forms per column type, nullability, and accepted input forms', () => {
    const events = block('events');
    expect(events).toContain(
      'Row: { id: string; account: string; n: number; big: string | null; ratio: number; price: string | null; ok: boolean; at: string; blob: string | null; doc: Json | null; tags: Array<string> | null; grid: Array<Array<number>> | null }',
    );
    expect(events).toContain(
      'Input: { id: string | number; account: string; n: number; big: string | number; ratio: number; price: string | number; ok: boolean; at: string | Date; blob: string; doc: Json; tags: ReadonlyArray<string>; grid: ReadonlyArray<ReadonlyArray<number>> }',
    );
    expect(text).toContain("import type { Json } from 'santokit/client';");
  });

  it('insert: generated keys are left out, a client key is required, defaults and nullable columns are optional', () => {
    expect(block('events')).toContain(
      'Insert: { account: string; n: number; big?: string | number | null; ratio?: number; price?: string | number | null; ok?: boolean; at?: string | Date; blob?: string | null; doc?: Json | null; tags?: ReadonlyArray<string> | null; grid?: ReadonlyArray<ReadonlyArray<number>> | null }',
    );
    expect(block('accounts')).toContain("Key: 'code';");
    expect(block('accounts')).toContain('Insert: { code: string; owner: string; secret_note?: string | null }');
  });

  it('relations are the ones expand resolves', () => {
    expect(block('events')).toContain("Relations: { acct: 'accounts' };");
    expect(block('accounts')).toContain('Relations: {};');
  });

  it("each role's grant is the first rule that matches it, with that rule's columns", () => {
    const roles = text.slice(text.indexOf('  roles: {'));
    // support: accounts through its own rule (owner only; the key it may send on insert is not a column grant)
    expect(roles).toMatch(
      /support: \{\n\s+accounts: \{ select: 'owner'; insert: 'owner' \};\n\s+audit: \{ select: 'id' \| 'note' \};\n\s+events: \{ select: 'account' \| 'n' \| 'at'; expand: 'acct' \};/,
    );
    // analyst: accounts through the public rule (every column), events' update limited to n
    expect(roles).toMatch(
      /analyst: \{\n\s+accounts: \{ select: 'code' \| 'owner' \| 'secret_note' \};\n\s+audit: \{ select: 'id' \| 'note' \};\n\s+events: \{ select: 'account' \| 'n' \| 'at'; expand: 'acct'; update: 'n' \};/,
    );
    // a key with none of the named roles: the public rules only
    expect(roles).toMatch(/public: \{\n\s+accounts: \{ select: 'code' \| 'owner' \| 'secret_note' \};\n\s+audit: \{ select: 'id' \| 'note' \};\n\s+\};/);
    expect(text).toContain("export type Role = keyof Database['roles'];");
  });

  it('text from the release cannot end the header comment', () => {
    expect(text).toContain('ref v1 * / evil');
    expect(text.indexOf('*/')).toBe(text.indexOf(' */\n') + 1);
  });
});
