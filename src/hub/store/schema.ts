import type { Generated } from 'kysely';

/**
 * The Hub store's tables. Timestamps are ISO-8601 strings (UTC) and JSON is text so the same
 * code runs on SQLite and PostgreSQL. Ids are ULIDs unless stated.
 */
export interface OrgsTable {
  id: string;
  name: string;
  created_at: string;
}

export interface OperatorsTable {
  id: string;
  email: string;
  /** argon2id PHC string; null until an invite is accepted */
  password_hash: string | null;
  status: 'active' | 'pending' | 'disabled';
  created_at: string;
}

export interface SessionsTable {
  id: string;
  /** sha256 hex of the bearer token; the token itself is never stored */
  token_hash: string;
  operator_id: string;
  created_at: string;
  expires_at: string;
  revoked_at: string | null;
}

export interface OrgMembershipsTable {
  org_id: string;
  operator_id: string;
  role: 'owner' | 'admin' | 'member';
  /** always 'active' since migration 0005 (an open invite is the pending state) */
  status: 'active' | 'pending';
  created_at: string;
}

export interface ProjectsTable {
  id: string;
  org_id: string;
  name: string;
  created_at: string;
}

export interface ProjectMembershipsTable {
  project_id: string;
  operator_id: string;
  role: 'admin' | 'deployer' | 'viewer';
  status: 'active' | 'pending';
  created_at: string;
}

export interface InvitesTable {
  id: string;
  code_hash: string;
  email: string;
  scope: 'org' | 'project';
  org_id: string;
  project_id: string | null;
  role: string;
  created_by: string;
  created_at: string;
  expires_at: string;
  accepted_at: string | null;
}

export interface EnvsTable {
  id: string;
  project_id: string;
  name: string;
  created_at: string;
}

export interface ConnectionsTable {
  id: string;
  project_id: string;
  env_id: string;
  name: string;
  engine: 'postgres';
  /** AES-256-GCM under STK_SECRET_KEY (see services/crypto.ts) */
  db_url_enc: string;
  /** what lists may show: postgres://user:****@host:port/db */
  display_url: string;
  created_at: string;
  updated_at: string;
}

export interface ReleasesTable {
  id: string;
  project_id: string;
  /** sha256 of the canonical inputs; same inputs → same release (idempotent apply) */
  content_hash: string;
  ref: string | null;
  /** ReleaseIR without releaseId/createdAt, as JSON */
  schema_json: string;
  permissions_json: string;
  connections_json: string;
  created_by: string | null;
  created_at: string;
}

export interface CurrentReleasesTable {
  env_id: string;
  release_id: string;
  updated_at: string;
}

export interface ApiKeysTable {
  /** the key id embedded in the plaintext key */
  id: string;
  project_id: string;
  env_id: string;
  name: string;
  roles_json: string;
  /** HMAC-SHA-256(pepper, secret), hex */
  secret_hash: string;
  /** during a rotation grace period: the previous secret's hash and its deadline */
  prev_secret_hash: string | null;
  prev_expires_at: string | null;
  status: 'active' | 'revoked';
  rate_limit_per_min: number | null;
  created_by: string | null;
  created_at: string;
  expires_at: string | null;
  revoked_at: string | null;
  rotated_at: string | null;
  last_used_at: string | null;
  /**
   * (migration 0004) set when the Hub issues a plaintext (create, rotate) over HTTP; cleared once the
   * response carrying it was handed to the network. Still set after a crash = the plaintext may never
   * have reached anyone: `apikey list` flags the key as unconfirmed.
   */
  undelivered_since?: string | null;
  /** (migration 0009) set while the key is suspended (`stk apikey suspend`); status stays `active` */
  suspended_at?: string | null;
  /** (migration 0009) JSON array of IP/CIDR entries the key may be used from; null = any address */
  allowed_ips_json?: string | null;
  /** (migration 0012) 1 while the grace period of the last rotation is `--grace auto` (the Hub ends it) */
  grace_auto?: number | null;
}

export interface AuditLogTable {
  id: string;
  ts: string;
  actor_id: string | null;
  actor_type: 'operator' | 'system' | 'bridge' | 'anonymous';
  actor_email: string | null;
  action: string;
  project: string | null;
  env: string | null;
  request_id: string | null;
  ip: string | null;
  detail_json: string;
}

/** The ordered change log the Hub streams to Bridges (keys, releases, connections). */
export interface ChangeEventsTable {
  seq: Generated<number>;
  ts: string;
  project: string;
  env: string;
  kind: string;
  payload_json: string;
}

export interface StoreMetaTable {
  key: string;
  value: string;
  created_at: string;
}

/** `stk schema snapshot`: an env's live schema at one moment (the newest few per env are kept). */
export interface SchemaSnapshotsTable {
  id: string;
  project_id: string;
  env_id: string;
  /** the env's current release when it was taken */
  release_id: string | null;
  /** [{name, tables: SnapshotTable[]}] per connection (src/protocol/api/hub.ts) */
  schema_json: string;
  tables: number;
  columns: number;
  /** the operator who took it */
  created_by: string | null;
  created_at: string;
}

export interface HubDatabase {
  orgs: OrgsTable;
  operators: OperatorsTable;
  sessions: SessionsTable;
  org_memberships: OrgMembershipsTable;
  projects: ProjectsTable;
  project_memberships: ProjectMembershipsTable;
  invites: InvitesTable;
  envs: EnvsTable;
  connections: ConnectionsTable;
  releases: ReleasesTable;
  current_releases: CurrentReleasesTable;
  api_keys: ApiKeysTable;
  audit_log: AuditLogTable;
  change_events: ChangeEventsTable;
  store_meta: StoreMetaTable;
  schema_snapshots: SchemaSnapshotsTable;
}
