import { type Kysely, type Migration, sql } from 'kysely';

/**
 * Ordered, static migrations (no folder import at runtime: the CLI is bundled).
 * Add a new entry with the next number; never edit or remove one that has shipped.
 * Each migration receives the dialect so it can pick an auto-increment type.
 */
export type Dialect = 'sqlite' | 'postgres';

export function migrations(dialect: Dialect): Record<string, Migration> {
  const ts = 'text';
  return {
    '0001_core': {
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('orgs')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('name', 'text', (c) => c.notNull().unique())
          .addColumn('created_at', ts, (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('operators')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('email', 'text', (c) => c.notNull().unique())
          .addColumn('password_hash', 'text')
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('created_at', ts, (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('sessions')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('token_hash', 'text', (c) => c.notNull().unique())
          .addColumn('operator_id', 'text', (c) => c.notNull().references('operators.id').onDelete('cascade'))
          .addColumn('created_at', ts, (c) => c.notNull())
          .addColumn('expires_at', ts, (c) => c.notNull())
          .addColumn('revoked_at', ts)
          .execute();
        await db.schema
          .createTable('org_memberships')
          .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id').onDelete('cascade'))
          .addColumn('operator_id', 'text', (c) => c.notNull().references('operators.id').onDelete('cascade'))
          .addColumn('role', 'text', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('created_at', ts, (c) => c.notNull())
          .addPrimaryKeyConstraint('org_memberships_pk', ['org_id', 'operator_id'])
          .execute();
        await db.schema
          .createTable('projects')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id').onDelete('cascade'))
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('created_at', ts, (c) => c.notNull())
          .addUniqueConstraint('projects_org_name_uq', ['org_id', 'name'])
          .execute();
        await db.schema
          .createTable('project_memberships')
          .addColumn('project_id', 'text', (c) => c.notNull().references('projects.id').onDelete('cascade'))
          .addColumn('operator_id', 'text', (c) => c.notNull().references('operators.id').onDelete('cascade'))
          .addColumn('role', 'text', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('created_at', ts, (c) => c.notNull())
          .addPrimaryKeyConstraint('project_memberships_pk', ['project_id', 'operator_id'])
          .execute();
        await db.schema
          .createTable('invites')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('code_hash', 'text', (c) => c.notNull().unique())
          .addColumn('email', 'text', (c) => c.notNull())
          .addColumn('scope', 'text', (c) => c.notNull())
          .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id').onDelete('cascade'))
          .addColumn('project_id', 'text', (c) => c.references('projects.id').onDelete('cascade'))
          .addColumn('role', 'text', (c) => c.notNull())
          .addColumn('created_by', 'text', (c) => c.notNull())
          .addColumn('created_at', ts, (c) => c.notNull())
          .addColumn('expires_at', ts, (c) => c.notNull())
          .addColumn('accepted_at', ts)
          .execute();
        await db.schema
          .createTable('envs')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('project_id', 'text', (c) => c.notNull().references('projects.id').onDelete('cascade'))
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('created_at', ts, (c) => c.notNull())
          .addUniqueConstraint('envs_project_name_uq', ['project_id', 'name'])
          .execute();
        await db.schema
          .createTable('connections')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('project_id', 'text', (c) => c.notNull().references('projects.id').onDelete('cascade'))
          .addColumn('env_id', 'text', (c) => c.notNull().references('envs.id').onDelete('cascade'))
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('engine', 'text', (c) => c.notNull())
          .addColumn('db_url_enc', 'text', (c) => c.notNull())
          .addColumn('display_url', 'text', (c) => c.notNull())
          .addColumn('created_at', ts, (c) => c.notNull())
          .addColumn('updated_at', ts, (c) => c.notNull())
          .addUniqueConstraint('connections_env_name_uq', ['env_id', 'name'])
          .execute();
        await db.schema
          .createTable('releases')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('project_id', 'text', (c) => c.notNull().references('projects.id').onDelete('cascade'))
          .addColumn('content_hash', 'text', (c) => c.notNull())
          .addColumn('ref', 'text')
          .addColumn('schema_json', 'text', (c) => c.notNull())
          .addColumn('permissions_json', 'text', (c) => c.notNull())
          .addColumn('connections_json', 'text', (c) => c.notNull())
          .addColumn('created_by', 'text')
          .addColumn('created_at', ts, (c) => c.notNull())
          .addUniqueConstraint('releases_project_hash_uq', ['project_id', 'content_hash'])
          .execute();
        await db.schema
          .createTable('current_releases')
          .addColumn('env_id', 'text', (c) => c.primaryKey().references('envs.id').onDelete('cascade'))
          .addColumn('release_id', 'text', (c) => c.notNull().references('releases.id'))
          .addColumn('updated_at', ts, (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('api_keys')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('project_id', 'text', (c) => c.notNull().references('projects.id').onDelete('cascade'))
          .addColumn('env_id', 'text', (c) => c.notNull().references('envs.id').onDelete('cascade'))
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('roles_json', 'text', (c) => c.notNull())
          .addColumn('secret_hash', 'text', (c) => c.notNull())
          .addColumn('prev_secret_hash', 'text')
          .addColumn('prev_expires_at', ts)
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('rate_limit_per_min', 'integer')
          .addColumn('created_by', 'text')
          .addColumn('created_at', ts, (c) => c.notNull())
          .addColumn('expires_at', ts)
          .addColumn('revoked_at', ts)
          .addColumn('rotated_at', ts)
          .addColumn('last_used_at', ts)
          .addUniqueConstraint('api_keys_env_name_uq', ['env_id', 'name'])
          .execute();
        await db.schema
          .createTable('audit_log')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('ts', ts, (c) => c.notNull())
          .addColumn('actor_id', 'text')
          .addColumn('actor_type', 'text', (c) => c.notNull())
          .addColumn('actor_email', 'text')
          .addColumn('action', 'text', (c) => c.notNull())
          .addColumn('project', 'text')
          .addColumn('env', 'text')
          .addColumn('request_id', 'text')
          .addColumn('ip', 'text')
          .addColumn('detail_json', 'text', (c) => c.notNull())
          .execute();
        await db.schema.createIndex('audit_log_project_ts_ix').on('audit_log').columns(['project', 'ts']).execute();
        await db.schema.createIndex('audit_log_ts_ix').on('audit_log').column('ts').execute();
        await db.schema
          .createTable('change_events')
          .addColumn('seq', dialect === 'postgres' ? 'serial' : 'integer', (c) => (dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement()))
          .addColumn('ts', ts, (c) => c.notNull())
          .addColumn('project', 'text', (c) => c.notNull())
          .addColumn('env', 'text', (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('payload_json', 'text', (c) => c.notNull())
          .execute();
        void sql;
      },
    },
    '0002_apikey_usage': {
      // API-key usage reported by Bridges: requests per key per minute (24 h) and source addresses (7 days)
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('api_key_usage')
          .addColumn('key_id', 'text', (c) => c.notNull())
          .addColumn('minute', ts, (c) => c.notNull())
          .addColumn('count', 'integer', (c) => c.notNull())
          .addPrimaryKeyConstraint('api_key_usage_pk', ['key_id', 'minute'])
          .execute();
        await db.schema.createIndex('api_key_usage_minute_ix').on('api_key_usage').column('minute').execute();
        await db.schema
          .createTable('api_key_sources')
          .addColumn('key_id', 'text', (c) => c.notNull())
          .addColumn('address', 'text', (c) => c.notNull())
          .addColumn('first_seen_at', ts, (c) => c.notNull())
          .addColumn('last_seen_at', ts, (c) => c.notNull())
          .addColumn('count', 'integer', (c) => c.notNull())
          .addPrimaryKeyConstraint('api_key_sources_pk', ['key_id', 'address'])
          .execute();
        await db.schema.createIndex('api_key_sources_seen_ix').on('api_key_sources').column('last_seen_at').execute();
      },
    },
    '0004_apikey_delivery': {
      // a key whose plaintext response was never handed to the network (the Hub died first) stays flagged
      async up(db: Kysely<any>) {
        await db.schema.alterTable('api_keys').addColumn('undelivered_since', ts).execute();
      },
    },
    '0005_invites_hold_pending_grants': {
      // an open invite is the only pending state: a membership row exists once an invite is accepted
      // and grants exactly what that invite named (pending rows let one invite's acceptance activate another's)
      async up(db: Kysely<any>) {
        await db.deleteFrom('project_memberships').where('status', '=', 'pending').execute();
        await db.deleteFrom('org_memberships').where('status', '=', 'pending').execute();
      },
    },
    '0006_store_meta': {
      // facts about the store itself, e.g. a check value of the master key it was created under
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('store_meta')
          .addColumn('key', 'text', (c) => c.primaryKey())
          .addColumn('value', 'text', (c) => c.notNull())
          .addColumn('created_at', ts, (c) => c.notNull())
          .execute();
      },
    },
    '0007_apikey_outcomes': {
      // per key and minute, requests by HTTP status: `error` = the call failed after the key was
      // authenticated, `rejected` = refused before it (401/403/429/503); and when each Bridge last
      // reported usage, so figures can be shown with their age
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('api_key_outcomes')
          .addColumn('key_id', 'text', (c) => c.notNull())
          .addColumn('minute', ts, (c) => c.notNull())
          .addColumn('kind', 'text', (c) => c.notNull())
          .addColumn('status', 'integer', (c) => c.notNull())
          .addColumn('count', 'integer', (c) => c.notNull())
          .addPrimaryKeyConstraint('api_key_outcomes_pk', ['key_id', 'minute', 'kind', 'status'])
          .execute();
        await db.schema.createIndex('api_key_outcomes_minute_ix').on('api_key_outcomes').column('minute').execute();
        await db.schema
          .createTable('usage_reports')
          .addColumn('bridge_id', 'text', (c) => c.primaryKey())
          .addColumn('reported_at', ts, (c) => c.notNull())
          .execute();
      },
    },
    '0008_schema_snapshots': {
      // `stk schema snapshot`: the live schema of an env's databases, recorded for drift checks
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('schema_snapshots')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('project_id', 'text', (c) => c.notNull().references('projects.id').onDelete('cascade'))
          .addColumn('env_id', 'text', (c) => c.notNull().references('envs.id').onDelete('cascade'))
          .addColumn('release_id', 'text')
          .addColumn('schema_json', 'text', (c) => c.notNull())
          .addColumn('tables', 'integer', (c) => c.notNull())
          .addColumn('columns', 'integer', (c) => c.notNull())
          .addColumn('created_by', 'text')
          .addColumn('created_at', ts, (c) => c.notNull())
          .execute();
        await db.schema.createIndex('schema_snapshots_env_ix').on('schema_snapshots').columns(['env_id', 'created_at']).execute();
      },
    },
    '0009_apikey_suspend_allowlist': {
      // `stk apikey suspend|resume`: a reversible stop (the status stays `active`, so the key still counts
      // as live and keeps its secret); and a key's IP/CIDR allowlist (JSON array, null = any address)
      async up(db: Kysely<any>) {
        await db.schema.alterTable('api_keys').addColumn('suspended_at', ts).execute();
        await db.schema.alterTable('api_keys').addColumn('allowed_ips_json', 'text').execute();
      },
    },
    '0011_webhooks': {
      // `stk webhooks`: endpoints (secret encrypted under STK_SECRET_KEY), the durable delivery queue
      // (outbox rows written in the transaction of the change; a lease per attempt, so one Hub sends
      // each delivery at a time and a dead Hub's lease expires), and which once-only notices were sent
      // (apikey.expiring per key and expiry, apikey.rate_limited per key and hour)
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('webhook_endpoints')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('project_id', 'text', (c) => c.notNull().references('projects.id').onDelete('cascade'))
          .addColumn('url', 'text', (c) => c.notNull())
          .addColumn('events_json', 'text', (c) => c.notNull())
          .addColumn('secret_enc', 'text', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('disabled_reason', 'text')
          .addColumn('dropped', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('created_by', 'text')
          .addColumn('created_at', ts, (c) => c.notNull())
          .execute();
        await db.schema.createIndex('webhook_endpoints_project_ix').on('webhook_endpoints').column('project_id').execute();
        await db.schema
          .createTable('webhook_deliveries')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('endpoint_id', 'text', (c) => c.notNull().references('webhook_endpoints.id').onDelete('cascade'))
          .addColumn('project_id', 'text', (c) => c.notNull())
          .addColumn('event_type', 'text', (c) => c.notNull())
          .addColumn('payload', 'text', (c) => c.notNull())
          .addColumn('status', 'text', (c) => c.notNull())
          .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('next_attempt_at', ts, (c) => c.notNull())
          .addColumn('lease_owner', 'text')
          .addColumn('lease_until', ts)
          .addColumn('last_attempt_at', ts)
          .addColumn('last_status', 'integer')
          .addColumn('last_error', 'text')
          .addColumn('created_at', ts, (c) => c.notNull())
          .addColumn('finished_at', ts)
          .execute();
        await db.schema.createIndex('webhook_deliveries_due_ix').on('webhook_deliveries').columns(['status', 'next_attempt_at']).execute();
        await db.schema.createIndex('webhook_deliveries_endpoint_ix').on('webhook_deliveries').columns(['endpoint_id', 'created_at']).execute();
        await db.schema.createIndex('webhook_deliveries_project_ix').on('webhook_deliveries').columns(['project_id', 'status']).execute();
        await db.schema
          .createTable('webhook_notices')
          .addColumn('key_id', 'text', (c) => c.notNull())
          .addColumn('notice', 'text', (c) => c.notNull())
          .addColumn('at', ts, (c) => c.notNull())
          .addPrimaryKeyConstraint('webhook_notices_pk', ['key_id', 'notice'])
          .execute();
        await db.schema.createIndex('webhook_notices_at_ix').on('webhook_notices').column('at').execute();
      },
    },
    '0010_leaks': {
      // leak response (issue 16 part 4): leak-report tokens (secret scanners, hashed like sessions),
      // each project's policy for a reported key, and one row per reported (key, secret): the report
      // is acted on once
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('leak_tokens')
          .addColumn('id', 'text', (c) => c.primaryKey())
          .addColumn('org_id', 'text', (c) => c.notNull().references('orgs.id').onDelete('cascade'))
          .addColumn('name', 'text', (c) => c.notNull())
          .addColumn('token_hash', 'text', (c) => c.notNull().unique())
          .addColumn('created_by', 'text')
          .addColumn('created_at', ts, (c) => c.notNull())
          .addColumn('last_used_at', ts)
          .addColumn('revoked_at', ts)
          .addUniqueConstraint('leak_tokens_org_name_uq', ['org_id', 'name'])
          .execute();
        await db.schema
          .createTable('leak_policies')
          .addColumn('project_id', 'text', (c) => c.primaryKey().references('projects.id').onDelete('cascade'))
          .addColumn('policy', 'text', (c) => c.notNull())
          .addColumn('updated_by', 'text')
          .addColumn('updated_at', ts, (c) => c.notNull())
          .execute();
        await db.schema
          .createTable('leak_reports')
          .addColumn('key_id', 'text', (c) => c.notNull())
          .addColumn('secret_hash', 'text', (c) => c.notNull())
          .addColumn('project_id', 'text', (c) => c.notNull().references('projects.id').onDelete('cascade'))
          .addColumn('action', 'text', (c) => c.notNull())
          .addColumn('source', 'text')
          .addColumn('url', 'text')
          .addColumn('token_id', 'text')
          .addColumn('reports', 'integer', (c) => c.notNull())
          .addColumn('first_reported_at', ts, (c) => c.notNull())
          .addColumn('last_reported_at', ts, (c) => c.notNull())
          .addPrimaryKeyConstraint('leak_reports_pk', ['key_id', 'secret_hash'])
          .execute();
      },
    },
    '0012_apikey_grace_usage': {
      // rotation that retires the old secret (issue 16 part 5): `--grace auto` on the key, and per
      // rotation with a grace period the requests per secret as Bridges report them, with the previous
      // secret's busiest client addresses (bounded per key)
      async up(db: Kysely<any>) {
        const big = dialect === 'postgres' ? 'bigint' : 'integer';
        await db.schema.alterTable('api_keys').addColumn('grace_auto', 'integer').execute();
        await db.schema
          .createTable('api_key_graces')
          .addColumn('key_id', 'text', (c) => c.primaryKey())
          .addColumn('rotated_at', ts, (c) => c.notNull())
          .addColumn('prev_until', ts, (c) => c.notNull())
          .addColumn('auto', 'integer', (c) => c.notNull())
          .addColumn('current_requests', big, (c) => c.notNull().defaultTo(0))
          .addColumn('previous_requests', big, (c) => c.notNull().defaultTo(0))
          .addColumn('previous_last_used_at', ts)
          .addColumn('unattributed_last_at', ts)
          .addColumn('ended_at', ts)
          .addColumn('end_reason', 'text')
          .execute();
        await db.schema
          .createTable('api_key_grace_sources')
          .addColumn('key_id', 'text', (c) => c.notNull())
          .addColumn('address', 'text', (c) => c.notNull())
          .addColumn('requests', big, (c) => c.notNull())
          .addColumn('last_seen_at', ts, (c) => c.notNull())
          .addPrimaryKeyConstraint('api_key_grace_sources_pk', ['key_id', 'address'])
          .execute();
      },
    },
    '0003_sync_bridges': {
      // Bridge presence and acknowledgements, shared by every Hub on the store (cluster-wide revoke waits)
      async up(db: Kysely<any>) {
        await db.schema
          .createTable('sync_bridges')
          .addColumn('bridge_id', 'text', (c) => c.primaryKey())
          .addColumn('hub_id', 'text', (c) => c.notNull())
          .addColumn('acked_seq', dialect === 'postgres' ? 'bigint' : 'integer', (c) => c.notNull().defaultTo(0))
          .addColumn('address', 'text')
          .addColumn('connected_at', ts, (c) => c.notNull())
          .addColumn('last_seen_at', ts, (c) => c.notNull())
          .addColumn('disconnected_at', ts)
          .execute();
      },
    },
  };
}
