import { z } from 'zod';
import { KEY_ID_RE } from '../key-format.js';
import { LEAK_TOKEN, OPERATOR, orgRoleAtLeast, projectRoleAtLeast } from '../route-auth.js';
import { IsoTime, Name, ProjectParams, defineRoute } from './define.js';

/**
 * Leak response (issue 16 part 4): the key lookup `stk apikey scan` uses, the report endpoint for
 * secret scanners, the leak-report tokens that authenticate them, and each project's leak policy.
 */

/** At most this many key ids per lookup (the CLI sends larger scans in several). */
export const MAX_LOOKUP_IDS = 1000;
/** At most this many keys per leak report, and bytes per report body. */
export const MAX_REPORTED_KEYS = 100;
export const LEAK_REPORT_BODY_LIMIT = 64 * 1024;
export const LEAK_POLICIES = ['notify', 'suspend', 'revoke'] as const;
export type LeakPolicy = (typeof LEAK_POLICIES)[number];
export const DEFAULT_LEAK_POLICY: LeakPolicy = 'suspend';

export const KeyLookupBody = z.object({
  keyIds: z.array(z.string().regex(KEY_ID_RE, 'a key id: 12 characters of Crockford base32')).min(1).max(MAX_LOOKUP_IDS),
});
export const KeyLookupItem = z
  .object({
    keyId: z.string(),
    found: z.boolean().meta({ description: 'false for an unknown id AND for a key of a project you are not project:admin on: the answers are the same' }),
    project: z.string().nullable(),
    env: z.string().nullable(),
    name: z.string().nullable(),
    status: z.string().nullable().meta({ description: "the key's status, as `stk apikey list` shows it (active, revoked, expired…)" }),
    lastUsedAt: IsoTime.nullable(),
    rotatedAt: IsoTime.nullable(),
    expiresAt: IsoTime.nullable(),
  })
  .meta({ id: 'KeyLookupItem' });

/** One leaked key as a scanner reports it (GitHub's secret-scanning partner format: token, type, url, source). */
const ReportedKey = z.looseObject({
  token: z.string().max(200).meta({ description: 'the leaked key, in full (it is verified, never stored)' }),
  type: z.string().max(100).optional(),
  url: z.string().max(2048).optional().meta({ description: 'where it was found' }),
  source: z.string().max(200).optional().meta({ description: 'what found it, e.g. content, commit, gist' }),
});
export const LeakReportBody = z.union([
  z.array(ReportedKey).min(1).max(MAX_REPORTED_KEYS),
  z.looseObject({
    keys: z.array(z.string().max(200)).min(1).max(MAX_REPORTED_KEYS),
    url: z.string().max(2048).optional(),
    source: z.string().max(200).optional(),
  }),
]);
export const LeakReportAnswer = z
  .object({
    received: z.number().int().meta({ description: 'how many keys the report held; the answer is the same whatever they are' }),
  })
  .meta({ id: 'LeakReportAnswer' });

export const LeakTokenView = z
  .object({
    id: z.string(),
    name: z.string(),
    status: z.enum(['active', 'revoked']),
    createdAt: IsoTime,
    createdBy: z.string().nullable(),
    lastUsedAt: IsoTime.nullable(),
    revokedAt: IsoTime.nullable(),
  })
  .meta({ id: 'LeakToken' });
export const CreatedLeakToken = LeakTokenView.extend({
  token: z.string().meta({ description: 'the token: shown once, stored only hashed' }),
}).meta({ id: 'CreatedLeakToken' });

export const LeakPolicyView = z
  .object({
    project: z.string(),
    policy: z.enum(LEAK_POLICIES),
    isDefault: z.boolean().meta({ description: 'no policy was set: the default (suspend) applies' }),
    updatedAt: IsoTime.nullable(),
  })
  .meta({ id: 'LeakPolicy' });

const TokenParams = z.object({ token: z.string().max(200).meta({ description: 'the token id or name' }) });

export const leaks = {
  lookup: defineRoute({
    method: 'POST',
    url: '/api/apikeys/lookup',
    auth: OPERATOR,
    summary:
      'Look up API keys by id (what `stk apikey scan` sends: never a secret). A key is described only to a project:admin of its project; for anyone else it reads exactly like an unknown id',
    tags: ['leaks'],
    body: KeyLookupBody,
    response: { 200: z.object({ items: z.array(KeyLookupItem) }) },
  }),
  report: defineRoute({
    method: 'POST',
    url: '/api/leaks',
    auth: LEAK_TOKEN,
    summary:
      "Report leaked API keys (secret scanners): each key is verified in full and its project's leak policy applied. The answer is the same whether the keys are valid, invalid or unknown, and is given before any action",
    tags: ['leaks'],
    body: LeakReportBody,
    bodyLimit: LEAK_REPORT_BODY_LIMIT,
    response: { 202: LeakReportAnswer },
  }),
  createToken: defineRoute({
    method: 'POST',
    url: '/api/leaks/tokens',
    auth: orgRoleAtLeast('admin'),
    summary: 'Create a leak-report token for a secret scanner (the plaintext is in this response only)',
    tags: ['leaks'],
    body: z.looseObject({ name: Name }),
    response: { 201: CreatedLeakToken },
    errors: ['CONFLICT'],
  }),
  listTokens: defineRoute({
    method: 'GET',
    url: '/api/leaks/tokens',
    auth: orgRoleAtLeast('admin'),
    summary: 'Leak-report tokens (never the secret)',
    tags: ['leaks'],
    response: { 200: z.object({ items: z.array(LeakTokenView) }) },
  }),
  revokeToken: defineRoute({
    method: 'POST',
    url: '/api/leaks/tokens/:token/revoke',
    auth: orgRoleAtLeast('admin'),
    summary: 'Revoke a leak-report token: the next report with it gets 401',
    tags: ['leaks'],
    params: TokenParams,
    response: { 200: LeakTokenView.extend({ alreadyRevoked: z.boolean() }) },
    errors: ['NOT_FOUND'],
  }),
  getPolicy: defineRoute({
    method: 'GET',
    url: '/api/projects/:project/leak-policy',
    auth: projectRoleAtLeast('admin'),
    summary: 'What a reported leaked key of this project triggers: notify (audit only), suspend (the default) or revoke',
    tags: ['leaks'],
    params: ProjectParams,
    response: { 200: LeakPolicyView },
  }),
  setPolicy: defineRoute({
    method: 'PUT',
    url: '/api/projects/:project/leak-policy',
    auth: projectRoleAtLeast('admin'),
    summary: "Set the project's leak policy",
    tags: ['leaks'],
    params: ProjectParams,
    body: z.looseObject({ policy: z.enum(LEAK_POLICIES) }),
    response: { 200: LeakPolicyView },
  }),
};

export type KeyLookupItem = z.infer<typeof KeyLookupItem>;
export type LeakReportBody = z.infer<typeof LeakReportBody>;
export type LeakTokenView = z.infer<typeof LeakTokenView>;
export type CreatedLeakToken = z.infer<typeof CreatedLeakToken>;
export type LeakPolicyView = z.infer<typeof LeakPolicyView>;
