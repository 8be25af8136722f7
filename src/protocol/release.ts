/**
 * The release: what `stk apply` produces on the Hub and what every Bridge executes.
 * Immutable once created. The Hub validates and compiles everything here (including CEL
 * conditions) so the Bridge never parses YAML or CEL on the request path.
 */
export const COLUMN_TYPES = ['string', 'int', 'bigint', 'float', 'decimal', 'boolean', 'json', 'timestamp', 'bytes', 'array'] as const;
export type ColumnType = (typeof COLUMN_TYPES)[number];

/**
 * The PostgreSQL type each logical type is stored as, spelled as `format_type()` prints it: `stk apply`
 * writes the DDL with it and compares introspection against it; the Bridge casts parameters to it.
 */
export const PG_TYPES: Record<ColumnType, string> = {
  string: 'text',
  int: 'integer',
  bigint: 'bigint',
  float: 'double precision',
  decimal: 'numeric',
  boolean: 'boolean',
  json: 'jsonb',
  array: 'jsonb',
  timestamp: 'timestamp with time zone',
  bytes: 'bytea',
};

export const ID_GENERATORS = ['ulid', 'uuid_v4', 'uuid_v7', 'nanoid', 'auto_increment', 'client'] as const;
export type IdGenerator = (typeof ID_GENERATORS)[number];

export const FK_ACTIONS = ['restrict', 'no_action', 'cascade', 'set_null', 'set_default'] as const;
export type FkAction = (typeof FK_ACTIONS)[number];

/** A type, possibly nested: `{type:'array', items:{type:'int'}}`. */
export interface TypeSpec {
  type: ColumnType;
  items?: TypeSpec;
}

export type DefaultIR = { kind: 'now' } | { kind: 'literal'; value: string | number | boolean };

export interface ReferenceIR {
  table: string;
  column: string;
  /** relation name used by `expand` (defaults to the target table name) */
  as: string;
  onDelete: FkAction;
  onUpdate: FkAction;
}

export interface ColumnIR extends TypeSpec {
  name: string;
  nullable: boolean;
  unique: boolean;
  default?: DefaultIR;
  references?: ReferenceIR;
}

export interface PrimaryKeyIR {
  name: string;
  /** `string` for ulid/uuid/nanoid/client, `bigint` for auto_increment (or client) */
  type: 'string' | 'bigint';
  generate: IdGenerator;
}

export interface IndexIR {
  name: string;
  columns: string[];
  unique: boolean;
}

export interface TableIR {
  name: string;
  connection: string;
  primaryKey: PrimaryKeyIR;
  /** every column except the primary key, in declaration order */
  columns: ColumnIR[];
  indexes: IndexIR[];
}

export interface SchemaIR {
  tables: Record<string, TableIR>;
}

export const OPS = ['select', 'insert', 'update', 'delete'] as const;
export type Op = (typeof OPS)[number];

/** One `resource.<column> == <value>` term of a compiled CEL condition (terms are ANDed). */
export interface ConditionTerm {
  column: string;
  equals: { kind: 'authSub' } | { kind: 'literal'; value: string | number | boolean };
}

export interface PermissionRule {
  roles: string[];
  /** compiled CEL; `source` is kept for messages only */
  condition?: { source: string; terms: ConditionTerm[] };
  /** allow-list of columns; null means every column */
  columns: string[] | null;
}

export interface PermissionsIR {
  tables: Record<string, Partial<Record<Op, PermissionRule[]>>>;
}

export interface ReleaseIR {
  releaseId: string;
  project: string;
  ref: string | null;
  createdAt: string;
  schema: SchemaIR;
  permissions: PermissionsIR;
  /** names of the connections the schema uses */
  connections: string[];
}

/** Every role name referenced by some rule of some table/op (reserved keywords excluded). */
export function referencedRoles(permissions: PermissionsIR): string[] {
  const out = new Set<string>();
  for (const ops of Object.values(permissions.tables)) {
    for (const rules of Object.values(ops)) {
      for (const r of rules ?? []) for (const role of r.roles) if (role !== 'public' && role !== 'authenticated') out.add(role);
    }
  }
  return [...out].sort();
}
