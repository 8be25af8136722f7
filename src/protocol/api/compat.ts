import { z } from 'zod';
import { orgRoleAtLeast, projectRoleAtLeast } from '../route-auth.js';
import { AckResult, IsoTime, NAME_DESCRIPTION, Name, defineRoute } from './define.js';

/**
 * The upstream Santokit Hub routes (the reference implementation's `/api/*`, docs/compat.md), for
 * scripts written against it: upstream paths and snake_case request/response shapes, served by the
 * same services as our routes (src/hub/routes/compat.ts maps the shapes, nothing more). Our RBAC
 * applies, including to the routes that had none upstream (release list: project viewer; promote,
 * rollback: project deployer), and so do our safety rules: keys are hashed and shown once, URLs are
 * stored encrypted and never returned, invites need their code, a revoke returns once every Bridge
 * refuses the key. `POST /api/projects {project}` is the same route as ours (hub.ts `projects.create`).
 */

const TAG = ['upstream compatibility'];
const Email = z.string().max(320);
/** a name the service checks (NAME_RE, 400 with the rule) */
const NewName = z.unknown().meta({ description: NAME_DESCRIPTION });
const Role = z.unknown().meta({ description: 'org: owner, admin, member; project: admin, deployer, viewer (422 INVALID_ROLE otherwise)' });
const UpOk = z.object({ ok: z.literal(true) });
export const UpstreamCreated = z.object({ ok: z.literal(true), created: z.boolean().meta({ description: 'false: it existed already (nothing changed)' }) });
const bodyProject = (role: 'admin' | 'deployer' | 'viewer') => projectRoleAtLeast(role, { from: 'body' });
const memberAdmin = projectRoleAtLeast('admin', { orOrg: 'owner', from: 'body' });

export const UpstreamInvite = z
  .object({
    ok: z.literal(true),
    email: z.string(),
    role: z.string(),
    invite_code: z.string().meta({ description: 'shown once; only its hash is stored' }),
    expires_at: IsoTime,
    accept_command: z.string().meta({ description: 'what the invitee runs (one line): the invite counts only once accepted' }),
  })
  .meta({ id: 'UpstreamInvite' });

export const compat = {
  createEnv: defineRoute({
    method: 'POST',
    url: '/api/envs',
    auth: bodyProject('admin'),
    summary: 'Upstream: create an env (idempotent: an existing env is 200 with created:false)',
    tags: TAG,
    body: z.looseObject({ project: Name, env: NewName }),
    response: { 200: UpstreamCreated },
    errors: ['CONFLICT'],
  }),
  setConnection: defineRoute({
    method: 'POST',
    url: '/api/connections/set',
    auth: bodyProject('admin'),
    summary: 'Upstream: create or replace a DB connection (stored encrypted, never returned)',
    tags: TAG,
    body: z.looseObject({
      project: Name,
      env: Name,
      name: NewName,
      engine: z.unknown().optional().meta({ description: 'postgres' }),
      db_url: z.string().max(4096),
    }),
    response: { 200: UpOk },
    errors: ['CONFLICT'],
  }),
  testConnection: defineRoute({
    method: 'POST',
    url: '/api/connections/test',
    auth: bodyProject('admin'),
    summary: 'Upstream: connect once and run SELECT 1 (400 with the reason when it fails)',
    tags: TAG,
    body: z.looseObject({ project: Name, env: Name, name: Name }),
    response: { 200: UpOk },
  }),
  apply: defineRoute({
    method: 'POST',
    url: '/api/apply',
    auth: bodyProject('deployer'),
    summary: 'Upstream: apply schema YAML and permissions to an env (DDL, then a release); returns once Bridges serve it',
    tags: TAG,
    body: z.looseObject({
      project: Name,
      env: Name,
      ref: z.string().max(200).nullable().optional(),
      schema: z.array(z.string()).max(1000).meta({ description: 'the text of each schema/*.yaml file' }),
      permissions: z.string().nullable().optional().meta({ description: 'the text of config/permissions.yaml' }),
      storage: z.unknown().optional().meta({ description: 'not supported here: only null or absent' }),
      logics: z.unknown().optional().meta({ description: 'not supported here: only null, absent or {}' }),
      dry_run: z.boolean().optional(),
      force: z.boolean().optional().meta({ description: 'ours: allow destructive steps' }),
      adopt: z.boolean().optional().meta({ description: 'ours: let apply manage tables it did not create (docs/compat.md)' }),
    }),
    response: { 200: z.object({ release_id: z.string().nullable(), reused: z.boolean(), dry_run: z.boolean() }) },
    errors: ['CONFLICT', 'SERVICE_UNAVAILABLE'],
  }),
  createKey: defineRoute({
    method: 'POST',
    url: '/api/apikeys/create',
    auth: bodyProject('admin'),
    summary: 'Upstream: create an API key (the plaintext is in this response only)',
    tags: TAG,
    body: z.looseObject({
      project: Name,
      env: Name,
      name: NewName,
      roles: z.unknown().meta({ description: "role names a rule of the env's permissions grants (422 INVALID_ROLE otherwise)" }),
    }),
    response: { 200: z.object({ key_id: z.string(), api_key: z.string().meta({ description: 'shown once, stored only hashed' }) }) },
    errors: ['CONFLICT', 'INVALID_ROLE'],
  }),
  listKeys: defineRoute({
    method: 'GET',
    url: '/api/apikeys/list',
    auth: projectRoleAtLeast('admin', { from: 'query' }),
    summary: "Upstream: an env's keys, newest first (never a secret)",
    tags: TAG,
    query: z.object({ project: Name, env: Name }),
    response: {
      200: z.array(
        z.object({
          id: z.string(),
          name: z.string(),
          revoked: z.boolean(),
          status: z.enum(['active', 'suspended', 'revoked', 'expired']),
          roles: z.array(z.string()),
        }),
      ),
    },
  }),
  revokeKey: defineRoute({
    method: 'POST',
    url: '/api/apikeys/revoke',
    auth: bodyProject('admin'),
    summary: 'Upstream: revoke a key by id or name; returns once every connected Bridge refuses it (503 naming the ones that did not confirm)',
    tags: TAG,
    body: z.looseObject({ project: Name, env: Name, key_id: z.string().max(200).meta({ description: 'key id or name' }) }),
    response: { 200: z.object({ ok: z.literal(true), key_id: z.string(), name: z.string(), already_revoked: z.boolean() }) },
    errors: ['SERVICE_UNAVAILABLE'],
  }),
  orgInvite: defineRoute({
    method: 'POST',
    url: '/api/org/invite',
    auth: orgRoleAtLeast('admin'),
    summary: 'Upstream: invite someone to the org (they accept with the code)',
    tags: TAG,
    body: z.looseObject({ email: Email, role: Role }),
    response: { 200: UpstreamInvite },
    errors: ['CONFLICT', 'INVALID_ROLE'],
  }),
  orgSetRole: defineRoute({
    method: 'POST',
    url: '/api/org/members/set-role',
    auth: orgRoleAtLeast('admin'),
    summary: "Upstream: change an org member's role",
    tags: TAG,
    body: z.looseObject({ user: Email, role: Role }),
    response: { 200: UpOk },
    errors: ['CONFLICT', 'INVALID_ROLE'],
  }),
  orgRemove: defineRoute({
    method: 'POST',
    url: '/api/org/remove',
    auth: orgRoleAtLeast('admin'),
    summary: 'Upstream: remove someone from the org',
    tags: TAG,
    body: z.looseObject({ user: Email }),
    response: { 200: UpOk },
    errors: ['CONFLICT'],
  }),
  projectInvite: defineRoute({
    method: 'POST',
    url: '/api/project/invite',
    auth: memberAdmin,
    summary: 'Upstream: invite someone to a project (they accept with the code)',
    tags: TAG,
    body: z.looseObject({ project: Name, email: Email, role: Role }),
    response: { 200: UpstreamInvite },
    errors: ['CONFLICT', 'INVALID_ROLE'],
  }),
  projectSetRole: defineRoute({
    method: 'POST',
    url: '/api/project/members/set-role',
    auth: memberAdmin,
    summary: "Upstream: set someone's role on a project",
    tags: TAG,
    body: z.looseObject({ project: Name, user: Email, role: Role }),
    response: { 200: UpOk },
    errors: ['CONFLICT', 'INVALID_ROLE'],
  }),
  projectRemove: defineRoute({
    method: 'POST',
    url: '/api/project/remove',
    auth: memberAdmin,
    summary: "Upstream: remove someone's project membership",
    tags: TAG,
    body: z.looseObject({ project: Name, user: Email }),
    response: { 200: UpOk },
  }),
  listReleases: defineRoute({
    method: 'GET',
    url: '/api/releases',
    auth: projectRoleAtLeast('viewer', { from: 'query' }),
    summary: "Upstream: a project's releases, newest first (with env: also whether each is that env's current one)",
    tags: TAG,
    query: z.object({ project: Name, env: Name.optional(), limit: z.string().max(20).optional().meta({ description: '1-500, default 50' }) }),
    response: {
      200: z.array(
        z.object({
          id: z.string(),
          ref: z.string().nullable(),
          created_at: IsoTime,
          envs: z.array(z.string()).meta({ description: 'envs whose current release this is' }),
          current: z.boolean().optional().meta({ description: "with ?env=: this is the env's current release" }),
        }),
      ),
    },
  }),
  promote: defineRoute({
    method: 'POST',
    url: '/api/releases/promote',
    auth: bodyProject('deployer'),
    summary: "Upstream: make the `from` env's current release (or release_id) current in `to`, applying its schema there first",
    tags: TAG,
    body: z.looseObject({ project: Name, from: Name.optional(), to: Name, release_id: z.string().max(200).optional() }),
    response: {
      200: z.object({
        ok: z.literal(true),
        release_id: z.string(),
        previous_release_id: z.string().nullable(),
        moved: z.boolean(),
        bridges: AckResult.nullable(),
      }),
    },
    errors: ['CONFLICT'],
  }),
  rollback: defineRoute({
    method: 'POST',
    url: '/api/releases/rollback',
    auth: bodyProject('deployer'),
    summary: 'Upstream: point an env back at an earlier release (409 when the live database no longer fits it)',
    tags: TAG,
    body: z.looseObject({ project: Name, env: Name, to_release_id: z.string().max(200) }),
    response: {
      200: z.object({
        ok: z.literal(true),
        release_id: z.string(),
        previous_release_id: z.string().nullable(),
        moved: z.boolean(),
        bridges: AckResult.nullable(),
      }),
    },
    errors: ['CONFLICT'],
  }),
};
