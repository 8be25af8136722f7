import { z } from 'zod';
import { OPERATOR, PUBLIC, SERVICE, orgRoleAtLeast, projectRoleAtLeast } from '../route-auth.js';
import { ORG_ROLES, PROJECT_ROLES } from '../names.js';
import type { UsageReport } from '../sync.js';
import { FK_ACTIONS } from '../release.js';
import { compat, UpstreamCreated } from './compat.js';
import { leaks } from './leaks.js';
import { AckResult, DOCS_API, EnvParams, IsoTime, NAME_DESCRIPTION, Name, Ok, ProjectParams, defineRoute } from './define.js';

/**
 * The Hub's HTTP API. Bodies are open objects (the services name an unknown or misspelt field
 * themselves where it matters); responses list every field they carry.
 */

const Email = z.string().max(320);
const OrgRole = z.enum(ORG_ROLES);
const ProjectRole = z.enum(PROJECT_ROLES);

// ---------------------------------------------------------------- health

const Health = z.object({ ok: z.boolean() });
export const health = {
  healthz: defineRoute({ method: 'GET', url: '/healthz', auth: PUBLIC, summary: 'Liveness', tags: ['health'], response: { 200: Health } }),
  health: defineRoute({ method: 'GET', url: '/health', auth: PUBLIC, summary: 'Liveness (alias)', tags: ['health'], response: { 200: Health } }),
  internalHealthz: defineRoute({
    method: 'GET',
    url: '/internal/healthz',
    auth: PUBLIC,
    summary: 'Liveness on the internal prefix',
    tags: ['health'],
    response: { 200: Health },
  }),
  readyz: defineRoute({
    method: 'GET',
    url: '/readyz',
    auth: PUBLIC,
    summary: 'Readiness: the store answers',
    tags: ['health'],
    response: { 200: Health, 503: Health },
  }),
};

// ---------------------------------------------------------------- operators: auth

export const LoginBody = z.looseObject({ email: Email, password: z.string().max(1024) });
export const LoginResponse = z.object({ token: z.string(), expiresAt: IsoTime, email: z.string() }).meta({ id: 'LoginResponse' });
export const WhoamiResponse = z
  .object({
    id: z.string(),
    email: z.string(),
    orgRole: OrgRole.nullable(),
    projectRoles: z.array(z.object({ project: z.string(), role: z.string(), status: z.string() })),
  })
  .meta({ id: 'Whoami' });

export const auth = {
  login: defineRoute({
    method: 'POST',
    url: '/api/auth/login',
    auth: PUBLIC,
    summary: 'Log in: a session token',
    tags: ['operators'],
    body: LoginBody,
    response: { 200: LoginResponse },
    errors: ['UNAUTHORIZED'],
  }),
  logout: defineRoute({ method: 'POST', url: '/api/auth/logout', auth: OPERATOR, summary: 'End this session', tags: ['operators'], response: { 200: Ok } }),
  whoami: defineRoute({
    method: 'GET',
    url: '/api/auth/whoami',
    auth: OPERATOR,
    summary: 'The logged-in operator and their roles',
    tags: ['operators'],
    response: { 200: WhoamiResponse },
  }),
};

// ---------------------------------------------------------------- projects and envs

export const ProjectView = z.object({ name: z.string(), createdAt: IsoTime }).meta({ id: 'Project' });
export const ProjectListItem = ProjectView.extend({ role: ProjectRole.meta({ description: "the caller's effective role" }) });
export const EnvView = z.object({ name: z.string(), createdAt: IsoTime }).meta({ id: 'Env' });
export const EnvListItem = EnvView.extend({ currentReleaseId: z.string().nullable() });
const NameBody = z.looseObject({ name: z.unknown().optional().meta({ description: NAME_DESCRIPTION }) });

export const projects = {
  create: defineRoute({
    method: 'POST',
    url: '/api/projects',
    auth: orgRoleAtLeast('admin'),
    summary: 'Create a project: {name} → 201 (409 when it exists); the upstream {project} → 200 {ok, created}, idempotent',
    tags: ['projects'],
    body: NameBody.extend({
      project: z
        .unknown()
        .optional()
        .meta({ description: `the upstream spelling of name (docs/compat.md): ${NAME_DESCRIPTION}` }),
    }),
    response: { 201: ProjectView, 200: UpstreamCreated },
    errors: ['CONFLICT'],
  }),
  list: defineRoute({
    method: 'GET',
    url: '/api/projects',
    auth: OPERATOR,
    summary: 'Projects the caller can see, with their role',
    tags: ['projects'],
    response: { 200: z.object({ items: z.array(ProjectListItem) }) },
  }),
  createEnv: defineRoute({
    method: 'POST',
    url: '/api/projects/:project/envs',
    auth: projectRoleAtLeast('admin'),
    summary: 'Create an env',
    tags: ['projects'],
    params: ProjectParams,
    body: NameBody,
    response: { 201: EnvView },
    errors: ['CONFLICT'],
  }),
  listEnvs: defineRoute({
    method: 'GET',
    url: '/api/projects/:project/envs',
    auth: projectRoleAtLeast('viewer'),
    summary: "A project's envs and their current release",
    tags: ['projects'],
    params: ProjectParams,
    response: { 200: z.object({ items: z.array(EnvListItem) }) },
  }),
};

// ---------------------------------------------------------------- connections

export const ConnectionView = z
  .object({
    name: z.string(),
    engine: z.literal('postgres'),
    url: z.string().meta({ description: 'host, port, user and database; the password masked' }),
    createdAt: IsoTime,
    updatedAt: IsoTime,
  })
  .meta({ id: 'Connection' });
export const ConnectionSet = ConnectionView.extend({ ack: AckResult });
export const ConnectionTest = z.object({ ok: z.literal(true), latencyMs: z.number() });
const ConnParams = EnvParams.extend({ name: Name });
export const connections = {
  set: defineRoute({
    method: 'PUT',
    url: '/api/projects/:project/envs/:env/connections/:name',
    auth: projectRoleAtLeast('admin'),
    summary: 'Create or replace a DB connection (the URL is stored encrypted, never returned)',
    tags: ['connections'],
    params: ConnParams,
    body: z.looseObject({
      engine: z.literal('postgres', { error: 'engine must be one of: postgres' }).optional(),
      dbUrl: z.string().max(4096).meta({ description: 'postgres://user:password@host:port/db' }),
    }),
    response: { 200: ConnectionSet },
  }),
  list: defineRoute({
    method: 'GET',
    url: '/api/projects/:project/envs/:env/connections',
    auth: projectRoleAtLeast('admin'),
    summary: "An env's connections (URLs masked)",
    tags: ['connections'],
    params: EnvParams,
    response: { 200: z.object({ items: z.array(ConnectionView) }) },
  }),
  test: defineRoute({
    method: 'POST',
    url: '/api/projects/:project/envs/:env/connections/:name/test',
    auth: projectRoleAtLeast('admin'),
    summary: 'Connect once and run SELECT 1',
    tags: ['connections'],
    params: ConnParams,
    response: { 200: ConnectionTest },
  }),
};

// ---------------------------------------------------------------- members and invites

export const MemberView = z
  .object({ email: z.string(), role: z.string(), status: z.string(), createdAt: IsoTime, source: z.enum(['project', 'org']).optional() })
  .meta({ id: 'Member' });
export const InviteView = z
  .object({ email: z.string(), role: z.string(), inviteCode: z.string().meta({ description: 'shown once; only its hash is stored' }), expiresAt: IsoTime })
  .meta({ id: 'Invite' });
// roles are checked by the service: an invalid one is 422 INVALID_ROLE naming the valid ones
const InviteBody = z.looseObject({
  email: Email,
  role: z.unknown().optional().meta({ description: 'org: owner, admin, member; project: admin, deployer, viewer' }),
});
const RoleBody = z.looseObject({ role: z.unknown().optional().meta({ description: 'org: owner, admin, member; project: admin, deployer, viewer' }) });
const EmailParams = z.object({ email: Email });
const ProjectEmailParams = ProjectParams.extend({ email: Email });
export const AcceptedInvite = z.object({ email: z.string() });
const memberAdmin = projectRoleAtLeast('admin', { orOrg: 'owner' });

export const members = {
  orgInvite: defineRoute({
    method: 'POST',
    url: '/api/org/invites',
    auth: orgRoleAtLeast('admin'),
    summary: 'Invite someone to the org',
    tags: ['members'],
    body: InviteBody,
    response: { 201: InviteView },
    errors: ['CONFLICT', 'INVALID_ROLE'],
  }),
  orgList: defineRoute({
    method: 'GET',
    url: '/api/org/members',
    auth: orgRoleAtLeast('admin'),
    summary: 'Org members and open invites',
    tags: ['members'],
    response: { 200: z.object({ items: z.array(MemberView) }) },
  }),
  orgSetRole: defineRoute({
    method: 'PUT',
    url: '/api/org/members/:email',
    auth: orgRoleAtLeast('admin'),
    summary: "Change an org member's role",
    tags: ['members'],
    params: EmailParams,
    body: RoleBody,
    response: { 200: MemberView },
    errors: ['CONFLICT', 'INVALID_ROLE'],
  }),
  orgRemove: defineRoute({
    method: 'DELETE',
    url: '/api/org/members/:email',
    auth: orgRoleAtLeast('admin'),
    summary: 'Remove someone from the org',
    tags: ['members'],
    params: EmailParams,
    response: { 200: Ok },
    errors: ['CONFLICT'],
  }),
  projectInvite: defineRoute({
    method: 'POST',
    url: '/api/projects/:project/invites',
    auth: memberAdmin,
    summary: 'Invite someone to a project',
    tags: ['members'],
    params: ProjectParams,
    body: InviteBody,
    response: { 201: InviteView },
    errors: ['CONFLICT', 'INVALID_ROLE'],
  }),
  projectList: defineRoute({
    method: 'GET',
    url: '/api/projects/:project/members',
    auth: memberAdmin,
    summary: "A project's members (explicit and inherited) and open invites",
    tags: ['members'],
    params: ProjectParams,
    response: { 200: z.object({ items: z.array(MemberView) }) },
  }),
  projectSetRole: defineRoute({
    method: 'PUT',
    url: '/api/projects/:project/members/:email',
    auth: memberAdmin,
    summary: "Set (or pin) someone's role on the project",
    tags: ['members'],
    params: ProjectEmailParams,
    body: RoleBody,
    response: { 200: MemberView },
    errors: ['CONFLICT', 'INVALID_ROLE'],
  }),
  projectRemove: defineRoute({
    method: 'DELETE',
    url: '/api/projects/:project/members/:email',
    auth: memberAdmin,
    summary: "Remove someone's project membership",
    tags: ['members'],
    params: ProjectEmailParams,
    response: { 200: Ok },
  }),
  accept: defineRoute({
    method: 'POST',
    url: '/api/invites/accept',
    auth: PUBLIC,
    summary: 'Accept an invite (the code is the credential) and set a password on first use',
    tags: ['members'],
    body: z.looseObject({ email: Email, code: z.string().max(200), password: z.string().max(1024).optional() }),
    response: { 200: AcceptedInvite },
    errors: ['UNAUTHORIZED', 'NOT_FOUND', 'CONFLICT'],
  }),
};

// ---------------------------------------------------------------- audit

export const AuditItem = z
  .object({
    id: z.string(),
    ts: IsoTime,
    actor: z.string().nullable().meta({ description: "the actor's email (null for system entries)" }),
    actorType: z.string(),
    action: z.string(),
    project: z.string().nullable(),
    env: z.string().nullable(),
    requestId: z.string().nullable(),
    ip: z.string().nullable(),
    detail: z.record(z.string(), z.unknown()),
  })
  .meta({ id: 'AuditItem' });
export const AuditQuery = z.object({
  project: z.string().optional(),
  env: z.string().optional(),
  action: z.string().optional().meta({ description: 'exact (apikey.revoke) or a domain (apikey.*)' }),
  since: z.string().optional().meta({ description: 'ISO-8601 time or a duration back from now (15m, 1h, 7d)' }),
  limit: z.string().optional().meta({ description: '1-1000, default 100' }),
});
export const audit = {
  list: defineRoute({
    method: 'GET',
    url: '/api/audit',
    auth: projectRoleAtLeast('admin', { orOrg: 'admin', from: 'query' }),
    summary: 'The audit log, newest first (org admins: all; project admins: their project)',
    tags: ['audit'],
    query: AuditQuery,
    response: { 200: z.object({ items: z.array(AuditItem) }) },
  }),
};

// ---------------------------------------------------------------- API keys

export const KeyStatus = z.enum(['active', 'suspended', 'revoked', 'expired']);
export const ApiKeyView = z
  .object({
    keyId: z.string(),
    name: z.string(),
    roles: z.array(z.string()),
    status: KeyStatus,
    createdAt: IsoTime,
    lastUsedAt: IsoTime.nullable(),
    expiresAt: IsoTime.nullable(),
    rateLimitPerMin: z.number().int().nullable(),
    rotatedAt: IsoTime.nullable(),
    suspendedAt: IsoTime.nullable().meta({ description: 'since when the key is suspended (null: not suspended)' }),
    allowedIps: z.array(z.string()).nullable().meta({ description: 'IPv4/IPv6 addresses and CIDR ranges the key may be used from (null: any address)' }),
    staleRoles: z.array(z.string()).meta({ description: "roles the env's current release no longer references" }),
    unconfirmed: z.boolean().meta({ description: "the Hub stopped before the response carrying this key's plaintext left it" }),
    grace: z
      .object({
        previousSecretValidUntil: IsoTime.meta({ description: 'the previous secret works until then at the latest' }),
        auto: z.boolean().meta({ description: '`--grace auto`: the Hub ends it once the previous secret has been unused for the quiet period' }),
      })
      .nullable()
      .meta({ description: "the last rotation's grace period while the previous secret still works (null: none)" }),
  })
  .meta({ id: 'ApiKey' });
const Expiry = {
  expiresIn: z.string().max(40).nullable().optional().meta({ description: 'a duration: 90d, 12h, 30m' }),
  expiresAt: IsoTime.nullable().optional(),
  rateLimitPerMin: z.number().int().nullable().optional().meta({ description: 'requests per minute; null = the Bridge default' }),
  allowedIps: z.unknown().optional().meta({
    description:
      'IPv4/IPv6 addresses and CIDR ranges (an array or a comma-separated string, at most 100) the key may be used from; null = any address (422 INVALID_IP_ALLOWLIST naming a bad entry)',
  }),
};
const KeyRoles = z.unknown().optional().meta({ description: "role names a rule of the env's permissions grants (422 INVALID_ROLE otherwise)" });
export const CreateKeyBody = z.looseObject({ name: z.unknown().optional(), roles: KeyRoles, ...Expiry });
/** the fields every response about one key starts with */
const KeyIdentity = ApiKeyView.pick({ keyId: true, name: true, roles: true });
const Plaintext = z.string().meta({ description: 'the plaintext key: shown once, stored only hashed' });
export const CreatedKey = ApiKeyView.pick({
  keyId: true,
  name: true,
  roles: true,
  status: true,
  createdAt: true,
  expiresAt: true,
  rateLimitPerMin: true,
  allowedIps: true,
})
  .extend({ apiKey: Plaintext, ack: AckResult })
  .meta({ id: 'CreatedApiKey' });
export const UpdateKeyBody = z.looseObject({ roles: KeyRoles, ...Expiry });
export const UpdatedKey = ApiKeyView.extend({ ack: AckResult.nullable() });
/** who used a key lately (what a revoke dry run shows) */
export const KeyUsageSummary = z.object({
  asOf: IsoTime.nullable().meta({ description: 'the figures include requests up to this time (Bridges report every 60 s); null: no Bridge connected' }),
  lastUsedAt: IsoTime.nullable(),
  requestsLast60m: z.number().int(),
  sources: z.array(z.object({ address: z.string(), lastSeenAt: IsoTime, count: z.number().int() })),
});
export const RevokeDryRun = z
  .object({ dryRun: z.literal(true), ...KeyIdentity.shape, status: KeyStatus, ...KeyUsageSummary.shape })
  .meta({ id: 'RevokeDryRun' });
export const RevokedKey = KeyIdentity.extend({
  status: z.literal('revoked'),
  revokedAt: IsoTime.nullable(),
  alreadyRevoked: z.boolean(),
  ack: AckResult.nullable(),
}).meta({ id: 'RevokedApiKey' });
export const RevokeResponse = z.union([RevokeDryRun, RevokedKey]);
export const SuspendedKey = KeyIdentity.extend({
  status: z.literal('suspended'),
  suspendedAt: IsoTime.nullable(),
  alreadySuspended: z.boolean().meta({ description: 'the key was suspended already: nothing changed (ack is null)' }),
  ack: AckResult.nullable(),
}).meta({ id: 'SuspendedApiKey' });
export const ResumedKey = KeyIdentity.extend({
  status: KeyStatus.meta({ description: 'active, or expired when the key expired meanwhile' }),
  alreadyActive: z.boolean().meta({ description: 'the key was not suspended: nothing changed (ack is null)' }),
  ack: AckResult.nullable(),
}).meta({ id: 'ResumedApiKey' });
export const RotatedKey = KeyIdentity.extend({
  status: z.literal('active'),
  rotatedAt: IsoTime,
  previousSecretValidUntil: IsoTime.nullable(),
  autoEnd: z.object({ quietSeconds: z.number().int() }).nullable().meta({
    description: '`grace: auto`: the grace period ends once the previous secret has had no request for quietSeconds (previousSecretValidUntil bounds it)',
  }),
  expiresAt: ApiKeyView.shape.expiresAt,
  apiKey: Plaintext,
  ack: AckResult,
}).meta({ id: 'RotatedApiKey' });
export const GraceEnded = KeyIdentity.extend({
  alreadyEnded: z.boolean().meta({ description: 'the key had no grace period in progress: nothing changed (ack is null)' }),
  ack: AckResult.nullable(),
}).meta({ id: 'ApiKeyGraceEnded' });
const GraceFigures = z
  .object({
    rotatedAt: IsoTime,
    auto: z.boolean(),
    until: IsoTime.meta({ description: 'the deadline set at rotation (auto: 7 days, or the key expiry)' }),
    endedAt: IsoTime.nullable(),
    endReason: z.string().nullable().meta({
      description:
        'quiet (auto: the previous secret was unused), deadline (auto: 7 days passed), operator (end-grace), revoked; null: still running or ran out',
    }),
    current: z.object({ requests: z.number().int() }),
    previous: z.object({
      requests: z.number().int(),
      lastUsedAt: IsoTime.nullable(),
      sources: z
        .array(z.object({ address: z.string(), requests: z.number().int(), lastSeenAt: IsoTime }))
        .meta({ description: "the previous secret's busiest client addresses (at most 20; counts are upper bounds)" }),
    }),
    unattributedLastAt: IsoTime.nullable().meta({
      description:
        'the last request after the rotation no Bridge could attribute to a secret (an older Bridge, or one that had not applied the rotation yet): taken as a possible use of the previous secret',
    }),
    quietSince: IsoTime.meta({ description: 'the latest of the rotation, the last use of the previous secret and unattributedLastAt' }),
    endsAfter: IsoTime.nullable().meta({
      description: 'auto, running: the earliest end if the previous secret stays unused (every Bridge must have reported too)',
    }),
  })
  .meta({ id: 'ApiKeyGraceFigures' });
const KeyParams = EnvParams.extend({ key: z.string().max(200).meta({ description: 'key id or name' }) });
const keysAdmin = projectRoleAtLeast('admin');
export const KeyUsageReport = z
  .object({
    key: ApiKeyView,
    asOf: IsoTime.nullable().meta({
      description: 'every connected Bridge has reported its requests up to this time (the oldest of their last reports); null: no Bridge connected',
    }),
    bridges: z.number().int().meta({ description: 'Bridges connected to the Hubs of this store' }),
    grace: GraceFigures.nullable().meta({ description: "requests per secret during the last rotation's grace period (null: rotated without one, or never)" }),
    from: IsoTime,
    to: IsoTime,
    series: z
      .array(z.object({ minute: IsoTime, requests: z.number().int() }))
      .meta({ description: 'requests the key authenticated, per minute, oldest first; minutes without any are left out' }),
    byStatus: z.array(z.object({ status: z.string(), requests: z.number().int() })).meta({
      description:
        "last 24 h: '2xx' = authenticated calls that succeeded; other statuses are calls that failed or requests refused (401 wrong/revoked/expired secret, 403, 429, 503)",
    }),
    sources: z.array(z.object({ address: z.string(), requests: z.number().int(), firstSeenAt: IsoTime, lastSeenAt: IsoTime })),
  })
  .meta({ id: 'ApiKeyUsage' });
const KEYS = '/api/projects/:project/envs/:env/apikeys';
export const apikeys = {
  create: defineRoute({
    method: 'POST',
    url: KEYS,
    auth: keysAdmin,
    summary: 'Create an API key (the plaintext is in this response only)',
    tags: ['api keys'],
    params: EnvParams,
    body: CreateKeyBody,
    response: { 201: CreatedKey },
    errors: ['CONFLICT', 'INVALID_ROLE', 'INVALID_IP_ALLOWLIST'],
  }),
  list: defineRoute({
    method: 'GET',
    url: KEYS,
    auth: keysAdmin,
    summary: "An env's keys (never a secret)",
    tags: ['api keys'],
    params: EnvParams,
    response: { 200: z.object({ items: z.array(ApiKeyView) }) },
  }),
  get: defineRoute({
    method: 'GET',
    url: `${KEYS}/:key`,
    auth: keysAdmin,
    summary: 'One key',
    tags: ['api keys'],
    params: KeyParams,
    response: { 200: ApiKeyView },
  }),
  update: defineRoute({
    method: 'PATCH',
    url: `${KEYS}/:key`,
    auth: keysAdmin,
    summary: "Change a key's roles, expiry, rate limit or IP allowlist (allowedIps: null = any address)",
    tags: ['api keys'],
    params: KeyParams,
    body: UpdateKeyBody,
    response: { 200: UpdatedKey },
    errors: ['CONFLICT', 'INVALID_ROLE', 'INVALID_IP_ALLOWLIST'],
  }),
  revoke: defineRoute({
    method: 'POST',
    url: `${KEYS}/:key/revoke`,
    auth: keysAdmin,
    summary: 'Revoke a key: returns once every connected Bridge refuses it (dryRun: who still uses it)',
    tags: ['api keys'],
    params: KeyParams,
    body: z.looseObject({ dryRun: z.boolean().optional() }).optional(),
    response: { 200: RevokeResponse },
  }),
  suspend: defineRoute({
    method: 'POST',
    url: `${KEYS}/:key/suspend`,
    auth: keysAdmin,
    summary: 'Suspend a key (reversible): returns once every connected Bridge refuses it with 401 API key suspended',
    tags: ['api keys'],
    params: KeyParams,
    body: z.looseObject({ reason: z.string().max(500).optional().meta({ description: 'kept in the audit log' }) }).optional(),
    response: { 200: SuspendedKey },
    errors: ['CONFLICT'],
  }),
  resume: defineRoute({
    method: 'POST',
    url: `${KEYS}/:key/resume`,
    auth: keysAdmin,
    summary: 'Resume a suspended key (same secret): returns once every connected Bridge accepts it again',
    tags: ['api keys'],
    params: KeyParams,
    body: z.looseObject({}).optional(),
    response: { 200: ResumedKey },
    errors: ['CONFLICT'],
  }),
  usage: defineRoute({
    method: 'GET',
    url: `${KEYS}/:key/usage`,
    auth: keysAdmin,
    summary: "A key's usage: requests per minute over 24 h, by HTTP status, by source, and how recent the figures are",
    tags: ['api keys'],
    params: KeyParams,
    response: { 200: KeyUsageReport },
  }),
  rotate: defineRoute({
    method: 'POST',
    url: `${KEYS}/:key/rotate`,
    auth: keysAdmin,
    summary: 'New secret for a key; the old one keeps working for the grace period',
    tags: ['api keys'],
    params: KeyParams,
    body: z
      .looseObject({
        grace: z
          .union([z.string().max(40), z.number()])
          .optional()
          .meta({
            description:
              'how long the old secret keeps working: 0, 30m, 1h… up to 7d; or auto (until it has been unused for STK_APIKEY_GRACE_QUIET, 15m; at most 7d)',
          }),
      })
      .optional(),
    response: { 200: RotatedKey },
    errors: ['CONFLICT'],
  }),
  endGrace: defineRoute({
    method: 'POST',
    url: `${KEYS}/:key/end-grace`,
    auth: keysAdmin,
    summary: "End a rotation's grace period now: returns once every connected Bridge refuses the previous secret",
    tags: ['api keys'],
    params: KeyParams,
    body: z.looseObject({}).optional(),
    response: { 200: GraceEnded },
  }),
};

// ---------------------------------------------------------------- apply and releases

export const PlanStep = z.object({ connection: z.string(), sql: z.string(), destructive: z.boolean(), description: z.string() }).meta({ id: 'PlanStep' });
export const ApplyResponse = z
  .object({
    releaseId: z.string().nullable(),
    reused: z.boolean(),
    ref: z.string().nullable(),
    dryRun: z.boolean(),
    plan: z.array(PlanStep),
    drift: z.array(z.string()),
    notes: z
      .array(z.string())
      .meta({ description: 'differences treated as equivalent and left as they are (e.g. a timestamp column for a declared timestamp)' }),
    ack: AckResult.nullable(),
  })
  .meta({ id: 'ApplyResponse' });
export const ApplyBody = z
  .looseObject({
    schema: z
      .array(z.looseObject({ file: z.string(), content: z.string() }), { error: '"schema" must be a list of {file, content}' })
      .meta({ description: 'the schema/*.yaml files' }),
    permissions: z.string().nullable().optional().meta({ description: 'the text of config/permissions.yaml' }),
    ref: z.string().nullable().optional(),
    dryRun: z.boolean().optional(),
    force: z.boolean().optional(),
    adopt: z.boolean().optional(),
    only: z.array(z.string()).nullable().optional(),
  })
  .meta({ id: 'ApplyRequest' });
export const ReleaseSummary = z
  .object({
    releaseId: z.string(),
    ref: z.string().nullable(),
    createdAt: IsoTime,
    connections: z.array(z.string()),
    tables: z.array(z.string()),
    envs: z.array(z.string()),
  })
  .meta({ id: 'ReleaseSummary' });
/** A release as the Hub sends it: the IR of src/protocol/release.ts (its type: ReleaseIR there). */
export const Release = z
  .object({
    releaseId: z.string(),
    project: z.string(),
    ref: z.string().nullable(),
    createdAt: IsoTime,
    schema: z.unknown(),
    permissions: z.unknown(),
    connections: z.array(z.string()),
  })
  .meta({ id: 'Release' });
export const CurrentRelease = ReleaseSummary.extend({ env: z.string(), since: IsoTime });
export const ReleaseDetail = Release.extend({ envs: z.array(z.string()) });
export const PromoteResponse = z.object({
  releaseId: z.string(),
  from: z.string().nullable(),
  to: z.string(),
  previousReleaseId: z.string().nullable(),
  dryRun: z.boolean(),
  moved: z.boolean(),
  plan: z.array(PlanStep),
  drift: z.array(z.string()),
  notes: z.array(z.string()).meta({ description: 'differences treated as equivalent and left as they are (e.g. a timestamp column for a declared timestamp)' }),
  ack: AckResult.nullable(),
});
export const RollbackResponse = z.object({
  releaseId: z.string(),
  env: z.string(),
  previousReleaseId: z.string().nullable(),
  moved: z.boolean(),
  ack: AckResult.nullable(),
});
const viewer = projectRoleAtLeast('viewer');
const deployer = projectRoleAtLeast('deployer');
export const releases = {
  apply: defineRoute({
    method: 'POST',
    url: '/api/projects/:project/envs/:env/apply',
    auth: deployer,
    summary: 'Apply schema and permissions to an env (DDL, then a release); returns once Bridges serve it',
    tags: ['releases'],
    params: EnvParams,
    body: ApplyBody,
    response: { 200: ApplyResponse },
    errors: ['CONFLICT', 'SERVICE_UNAVAILABLE'],
  }),
  list: defineRoute({
    method: 'GET',
    url: '/api/projects/:project/releases',
    auth: viewer,
    summary: "A project's releases, newest first",
    tags: ['releases'],
    params: ProjectParams,
    query: z.object({ limit: z.string().optional() }),
    response: { 200: z.object({ items: z.array(ReleaseSummary) }) },
  }),
  current: defineRoute({
    method: 'GET',
    url: '/api/projects/:project/envs/:env/releases/current',
    auth: viewer,
    summary: "An env's current release",
    tags: ['releases'],
    params: EnvParams,
    response: { 200: CurrentRelease },
  }),
  show: defineRoute({
    method: 'GET',
    url: '/api/projects/:project/releases/:releaseId',
    auth: viewer,
    summary: 'One release with its schema and permissions',
    tags: ['releases'],
    params: ProjectParams.extend({ releaseId: z.string().max(200) }),
    response: { 200: ReleaseDetail },
  }),
  promote: defineRoute({
    method: 'POST',
    url: '/api/projects/:project/releases/promote',
    auth: deployer,
    summary: "Make an env's (or a given) release current in another env",
    tags: ['releases'],
    params: ProjectParams,
    body: z.looseObject({
      from: z.string().optional(),
      to: z.string(),
      releaseId: z.string().optional(),
      force: z.boolean().optional(),
      adopt: z.boolean().optional(),
      dryRun: z.boolean().optional(),
    }),
    response: { 200: PromoteResponse },
    errors: ['CONFLICT'],
  }),
  rollback: defineRoute({
    method: 'POST',
    url: '/api/projects/:project/envs/:env/rollback',
    auth: deployer,
    summary: 'Point an env back at an earlier release',
    tags: ['releases'],
    params: EnvParams,
    body: z.looseObject({ releaseId: z.string().optional() }).optional(),
    response: { 200: RollbackResponse },
    errors: ['CONFLICT'],
  }),
};

// ---------------------------------------------------------------- live schema snapshots (drift checks)

export const SnapshotTable = z
  .object({
    name: z.string(),
    managed: z.boolean().meta({ description: 'created or adopted by stk apply' }),
    columns: z.array(
      z.object({
        name: z.string(),
        type: z.string().meta({ description: "PostgreSQL's format_type(), e.g. text, bigint, timestamp with time zone" }),
        nullable: z.boolean(),
        default: z.string().nullable(),
      }),
    ),
    primaryKey: z.array(z.string()).nullable(),
    uniques: z.array(z.array(z.string())),
    foreignKeys: z.array(
      z.object({
        columns: z.array(z.string()),
        refTable: z.string(),
        refColumns: z.array(z.string()),
        onDelete: z.enum(FK_ACTIONS),
        onUpdate: z.enum(FK_ACTIONS),
      }),
    ),
    indexes: z
      .array(z.object({ name: z.string(), columns: z.array(z.string()), unique: z.boolean() }))
      .meta({ description: 'indexes that back no primary key or unique constraint' }),
  })
  .meta({ id: 'SnapshotTable' });
export const SchemaChange = z
  .object({
    connection: z.string(),
    table: z.string().nullable(),
    object: z.enum(['connection', 'table', 'column', 'primary key', 'unique', 'foreign key', 'index']),
    change: z.enum(['added', 'removed', 'changed']),
    description: z.string(),
  })
  .meta({ id: 'SchemaChange' });
export const SchemaSummary = z.object({ connections: z.number().int(), tables: z.number().int(), columns: z.number().int() });
export const SchemaSnapshot = z
  .object({
    snapshotId: z.string(),
    project: z.string(),
    env: z.string(),
    takenAt: IsoTime,
    takenBy: z.string().nullable(),
    releaseId: z.string().nullable().meta({ description: "the env's current release when the snapshot was taken" }),
    summary: SchemaSummary,
    connections: z.array(z.object({ name: z.string(), tables: z.array(SnapshotTable) })),
  })
  .meta({ id: 'SchemaSnapshot' });
export const RecordedSnapshot = SchemaSnapshot.extend({
  previousSnapshotId: z.string().nullable(),
  changes: z.array(SchemaChange).meta({ description: 'what differs from the previous snapshot of the env (empty for the first)' }),
}).meta({ id: 'RecordedSnapshot' });
export const SchemaDrift = z
  .object({
    snapshotId: z.string(),
    takenAt: IsoTime,
    releaseId: z.string().nullable(),
    checkedAt: IsoTime,
    summary: SchemaSummary.meta({ description: 'the live schema now' }),
    changes: z.array(SchemaChange).meta({ description: 'how the live schema differs from the snapshot; empty: no drift' }),
  })
  .meta({ id: 'SchemaDrift' });
export const schema = {
  snapshot: defineRoute({
    method: 'POST',
    url: '/api/projects/:project/envs/:env/schema/snapshot',
    auth: projectRoleAtLeast('deployer'),
    summary: "Record the live schema of the env's databases (every connection) for drift checks",
    tags: ['schema'],
    params: EnvParams,
    response: { 201: RecordedSnapshot },
    errors: ['CONFLICT', 'SERVICE_UNAVAILABLE'],
  }),
  drift: defineRoute({
    method: 'GET',
    url: '/api/projects/:project/envs/:env/schema/drift',
    auth: projectRoleAtLeast('deployer'),
    summary: "How the env's live schema differs from its latest snapshot",
    tags: ['schema'],
    params: EnvParams,
    response: { 200: SchemaDrift },
    errors: ['CONFLICT', 'SERVICE_UNAVAILABLE'],
  }),
};

// ---------------------------------------------------------------- webhooks (docs/webhooks.md)

export const WebhookView = z
  .object({
    webhookId: z.string(),
    url: z.string(),
    events: z.array(z.string()),
    status: z.enum(['active', 'disabled']),
    disabledReason: z.string().nullable().meta({ description: 'why it stopped (the receiver answered 410 Gone)' }),
    pending: z.number().int().meta({ description: 'deliveries waiting to be sent or retried' }),
    dropped: z.number().int().meta({ description: "events not queued for it because the project's queue was full" }),
    createdAt: IsoTime,
  })
  .meta({ id: 'Webhook' });
export const CreatedWebhook = WebhookView.extend({
  secret: z.string().meta({ description: 'the signing secret (whsec_…): shown once; the Hub keeps it encrypted to sign with' }),
}).meta({ id: 'CreatedWebhook' });
export const AddWebhookBody = z.looseObject({
  url: z.unknown().optional().meta({ description: 'https:// URL of the receiver' }),
  events: z.unknown().optional().meta({ description: 'event types to receive (docs/webhooks.md)' }),
});
export const WebhookDelivery = z
  .object({
    deliveryId: z.string().meta({ description: 'the webhook-id header: the same on every attempt' }),
    webhookId: z.string(),
    type: z.string(),
    status: z.enum(['pending', 'succeeded', 'failed']),
    attempts: z.number().int(),
    createdAt: IsoTime,
    lastAttemptAt: IsoTime.nullable(),
    nextAttemptAt: IsoTime.nullable().meta({ description: 'when it is (re)tried; null once finished' }),
    lastResponseStatus: z.number().int().nullable().meta({ description: "the receiver's last HTTP status (null: no answer)" }),
    lastError: z.string().nullable(),
    finishedAt: IsoTime.nullable(),
  })
  .meta({ id: 'WebhookDelivery' });
const WebhookParams = ProjectParams.extend({ webhook: z.string().max(200).meta({ description: 'webhook id (wh_…)' }) });
const WEBHOOKS = '/api/projects/:project/webhooks';
const webhooksAdmin = projectRoleAtLeast('admin');
export const webhooks = {
  add: defineRoute({
    method: 'POST',
    url: WEBHOOKS,
    auth: webhooksAdmin,
    summary: 'Add a webhook endpoint (the signing secret is in this response only)',
    tags: ['webhooks'],
    params: ProjectParams,
    body: AddWebhookBody,
    response: { 201: CreatedWebhook },
    errors: ['CONFLICT'],
  }),
  list: defineRoute({
    method: 'GET',
    url: WEBHOOKS,
    auth: webhooksAdmin,
    summary: "A project's webhook endpoints (never a secret)",
    tags: ['webhooks'],
    params: ProjectParams,
    response: { 200: z.object({ items: z.array(WebhookView) }) },
  }),
  remove: defineRoute({
    method: 'DELETE',
    url: `${WEBHOOKS}/:webhook`,
    auth: webhooksAdmin,
    summary: 'Remove a webhook endpoint and its queued deliveries',
    tags: ['webhooks'],
    params: WebhookParams,
    response: { 200: Ok },
  }),
  test: defineRoute({
    method: 'POST',
    url: `${WEBHOOKS}/:webhook/test`,
    auth: webhooksAdmin,
    summary: 'Queue a webhook.test event to this endpoint',
    tags: ['webhooks'],
    params: WebhookParams,
    response: { 202: z.object({ deliveryId: z.string() }) },
    errors: ['CONFLICT'],
  }),
  deliveries: defineRoute({
    method: 'GET',
    url: `${WEBHOOKS}/deliveries`,
    auth: webhooksAdmin,
    summary: "Recent deliveries of the project's webhooks, newest first",
    tags: ['webhooks'],
    params: ProjectParams,
    query: z.object({
      webhook: z.string().max(200).optional().meta({ description: 'only this endpoint' }),
      status: z.enum(['pending', 'succeeded', 'failed']).optional(),
      limit: z.string().optional().meta({ description: '1-1000, default 50' }),
    }),
    response: { 200: z.object({ items: z.array(WebhookDelivery) }) },
  }),
};

// ---------------------------------------------------------------- internal (Bridges, service token)

const BridgeId = z.string().regex(/^[A-Za-z0-9._:-]{1,128}$/, 'bridgeId: 1-128 of letters, digits, . _ : -');
/** `POST /internal/sync/usage`: what a Bridge counted since its last report (src/protocol/sync.ts UsageReport). */
export const UsageReportBody = z.object({
  bridgeId: BridgeId,
  session: z.string().max(200).optional(),
  keys: z
    .array(
      z.object({
        keyId: z.string().max(200),
        minutes: z
          .array(
            z.object({
              minute: z.string().max(40),
              count: z.number(),
              errors: z
                .record(z.string().max(3), z.number())
                .optional()
                .meta({ description: 'calls that failed after the key was authenticated, by HTTP status' }),
              rejected: z
                .record(z.string().max(3), z.number())
                .optional()
                .meta({ description: 'requests with this key id refused before the call, by HTTP status' }),
            }),
          )
          .max(100_000),
        lastUsedAt: z.string().max(40).nullable().meta({ description: 'null when every request of the key in this report was refused' }),
        sources: z.array(z.object({ address: z.string().max(100), count: z.number() })).max(10_000),
        plainLastUsedAt: z
          .string()
          .max(40)
          .nullable()
          .optional()
          .meta({ description: 'the last request counted while the key had no grace period on this Bridge' }),
        grace: z
          .object({
            prevUntil: z.string().max(40),
            current: z.number(),
            previous: z.number(),
            currentLastUsedAt: z.string().max(40).nullable(),
            previousLastUsedAt: z.string().max(40).nullable(),
            previousSources: z.array(z.object({ address: z.string().max(100), count: z.number() })).max(100),
          })
          .optional()
          .meta({ description: 'requests per secret while the key had a rotation grace period ending at prevUntil' }),
      }),
    )
    .max(100_000),
  perSecret: z.boolean().optional().meta({ description: 'the Bridge counts per secret during grace periods (plainLastUsedAt, grace)' }),
  sentAt: z.string().max(40).optional().meta({ description: "the Bridge's clock when it sent the report (the Hub corrects its times by the difference)" }),
  lostLastAt: z.string().max(40).optional().meta({ description: 'the last request the Bridge could not count since its previous report' }),
  more: z.boolean().optional().meta({ description: "more parts of this report follow: the Bridge's report time is recorded with the last part" }),
});
// this schema and the Bridge's UsageReport are the same shape both ways (a drift is a build error)
export const usageReportMatches = [(r: UsageReport): z.input<typeof UsageReportBody> => r, (b: z.output<typeof UsageReportBody>): UsageReport => b] as const;
export const internal = {
  snapshot: defineRoute({
    method: 'GET',
    url: '/internal/sync/snapshot',
    auth: SERVICE,
    summary: 'Every env state and key hash (Bridges only)',
    tags: ['internal'],
    response: { 200: z.object({ seq: z.number(), pepper: z.string(), envs: z.array(z.unknown()), keys: z.array(z.unknown()) }) },
  }),
  stream: defineRoute({
    method: 'GET',
    url: '/internal/sync/stream',
    auth: SERVICE,
    summary: 'The change stream (NDJSON): snapshot or resume point, then changes in seq order, heartbeats',
    tags: ['internal'],
    query: z.object({
      bridgeId: BridgeId,
      since: z.string().regex(/^\d*$/, 'since must be a non-negative integer').optional(),
      // `rows`: the snapshot's keys as compact `keyrows` batches; any other value (a later format) gets `keys`
      keyFormat: z.string().max(40).optional(),
      // what the Bridge enforces (`suspend,allowlist`); without them (an older Bridge) keys it could not
      // enforce are sent as revoked
      caps: z.string().max(200).optional(),
    }),
    response: { 200: z.string().meta({ description: 'application/x-ndjson, one SyncMessage per line; the x-santokit-sync-session header names the session' }) },
    stream: true,
  }),
  ack: defineRoute({
    method: 'POST',
    url: '/internal/sync/ack',
    auth: SERVICE,
    summary: 'A Bridge applied these seqs (only from the stream session that owns the id)',
    tags: ['internal'],
    body: z.looseObject({
      bridgeId: BridgeId,
      session: z.string().max(200).optional(),
      seqs: z.array(z.number()).max(100_000).optional(),
      snapshot: z.number().optional(),
    }),
    response: { 200: Ok },
    errors: ['CONFLICT'],
  }),
  usage: defineRoute({
    method: 'POST',
    url: '/internal/sync/usage',
    auth: SERVICE,
    summary: 'Per-key usage counted by a Bridge since its last report',
    tags: ['internal'],
    body: UsageReportBody,
    response: { 200: z.object({ keys: z.number() }) },
    errors: ['CONFLICT'],
  }),
  bridges: defineRoute({
    method: 'GET',
    url: '/internal/sync/bridges',
    auth: SERVICE,
    summary: 'Bridges streaming from this Hub',
    tags: ['internal'],
    response: { 200: z.object({ items: z.array(z.object({ bridgeId: z.string() })) }) },
  }),
  cluster: defineRoute({
    method: 'GET',
    url: '/internal/sync/cluster',
    auth: SERVICE,
    summary: 'Every Bridge a revoke waits for, across Hubs',
    tags: ['internal'],
    response: { 200: z.object({ hubId: z.string(), items: z.array(z.object({ bridgeId: z.string(), ackedSeq: z.number() })) }) },
  }),
  currentRelease: defineRoute({
    method: 'GET',
    url: '/internal/releases/:project/:env/current',
    auth: SERVICE,
    summary: "An env's current release (ETag = release id)",
    tags: ['internal'],
    params: EnvParams,
    response: { 200: Release, 304: z.null().meta({ description: 'not modified' }) },
  }),
};

/** Every Hub route. */
export const HUB_API = {
  ...DOCS_API,
  ...health,
  ...prefixed('auth', auth),
  ...prefixed('projects', projects),
  ...prefixed('connections', connections),
  ...prefixed('members', members),
  ...prefixed('audit', audit),
  ...prefixed('apikeys', apikeys),
  ...prefixed('leaks', leaks),
  ...prefixed('releases', releases),
  ...prefixed('schema', schema),
  ...prefixed('webhooks', webhooks),
  ...prefixed('internal', internal),
  ...prefixed('compat', compat),
};

function prefixed<T extends Record<string, unknown>>(p: string, o: T): Record<string, T[keyof T]> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [`${p}.${k}`, v])) as Record<string, T[keyof T]>;
}

// one name per shape: each schema's type under the schema's own name
export type ProjectView = z.infer<typeof ProjectView>;
export type EnvView = z.infer<typeof EnvView>;
export type ConnectionView = z.infer<typeof ConnectionView>;
export type MemberView = z.infer<typeof MemberView>;
export type InviteView = z.infer<typeof InviteView>;
export type WhoamiResponse = z.infer<typeof WhoamiResponse>;
export type AuditItem = z.infer<typeof AuditItem>;
export type ApiKeyView = z.infer<typeof ApiKeyView>;
export type CreatedKey = z.infer<typeof CreatedKey>;
export type RotatedKey = z.infer<typeof RotatedKey>;
export type GraceEnded = z.infer<typeof GraceEnded>;
export type RevokeResponse = z.infer<typeof RevokeResponse>;
export type RevokeDryRun = z.infer<typeof RevokeDryRun>;
export type RevokedKey = z.infer<typeof RevokedKey>;
export type SuspendedKey = z.infer<typeof SuspendedKey>;
export type ResumedKey = z.infer<typeof ResumedKey>;
export type ProjectListItem = z.infer<typeof ProjectListItem>;
export type EnvListItem = z.infer<typeof EnvListItem>;
export type KeyUsageReport = z.infer<typeof KeyUsageReport>;
export type PlanStep = z.infer<typeof PlanStep>;
export type LoginResponse = z.infer<typeof LoginResponse>;
export type ConnectionSet = z.infer<typeof ConnectionSet>;
export type ConnectionTest = z.infer<typeof ConnectionTest>;
export type AcceptedInvite = z.infer<typeof AcceptedInvite>;
export type KeyStatus = z.infer<typeof KeyStatus>;
export type UpdatedKey = z.infer<typeof UpdatedKey>;
export type KeyUsageSummary = z.infer<typeof KeyUsageSummary>;
export type CurrentRelease = z.infer<typeof CurrentRelease>;
export type ReleaseDetail = z.infer<typeof ReleaseDetail>;
export type PromoteResponse = z.infer<typeof PromoteResponse>;
export type RollbackResponse = z.infer<typeof RollbackResponse>;
export type ApplyResponse = z.infer<typeof ApplyResponse>;
export type ReleaseSummary = z.infer<typeof ReleaseSummary>;
export type SnapshotTable = z.infer<typeof SnapshotTable>;
export type SchemaChange = z.infer<typeof SchemaChange>;
export type SchemaSummary = z.infer<typeof SchemaSummary>;
export type SchemaSnapshot = z.infer<typeof SchemaSnapshot>;
export type RecordedSnapshot = z.infer<typeof RecordedSnapshot>;
export type SchemaDrift = z.infer<typeof SchemaDrift>;
export type WebhookView = z.infer<typeof WebhookView>;
export type CreatedWebhook = z.infer<typeof CreatedWebhook>;
export type WebhookDelivery = z.infer<typeof WebhookDelivery>;
