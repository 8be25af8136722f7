import type { Command } from 'commander';
import { clearCredentials, readCredentials, writeCredentials } from '../config.js';
import { printJson, success, terminalSafe } from '../output.js';
import { getPassword, promptLine } from '../prompt.js';
import { client, example, opts } from './common.js';
import type { LoginResponse, WhoamiResponse } from '../../protocol/api/hub.js';

export function registerAuthCommands(program: Command): void {
  example(
    program
      .command('login')
      .description('log in to the Hub; the session is stored in $STK_CONFIG_DIR/credentials.json (mode 0600)')
      .option('--email <email>', 'operator email (prompted when omitted)')
      .option('--password-stdin', 'read the password from stdin (for scripts)')
      .option('--json', 'print {email, expiresAt, hubUrl}'),
    'stk login',
    'echo "$STK_PASSWORD" | stk login --email ops@example.com --password-stdin',
  ).action(async (_o, cmd: Command) => {
    const o = opts<{ email?: string; passwordStdin?: boolean }>(cmd);
    const email = o.email ?? (await promptLine('Email: '));
    const password = await getPassword(o.passwordStdin);
    const c = client(cmd, true);
    const r = await c.post<LoginResponse>('/api/auth/login', { email, password });
    writeCredentials({ hubUrl: c.hubUrl, token: r.token, email: r.email, expiresAt: r.expiresAt });
    if (o.json) printJson({ email: r.email, expiresAt: r.expiresAt, hubUrl: c.hubUrl });
    else success(`Logged in to ${c.hubUrl} as ${r.email} (session expires ${r.expiresAt})`);
  });

  example(program.command('logout').description('end the session on the Hub and forget it locally'), 'stk logout').action(async (_o, cmd: Command) => {
    const had = readCredentials();
    if (had || process.env.STK_AUTH_TOKEN) {
      await client(cmd)
        .post('/api/auth/logout')
        .catch(() => undefined);
    }
    clearCredentials();
    success(had ? `Logged out ${had.email}` : 'Not logged in');
  });

  example(
    program
      .command('whoami')
      .description('show the Hub, the logged-in operator, what their org role lets them do, and their project roles')
      .option('--json', 'print {hubUrl, id, email, orgRole, projectRoles}'),
    'stk whoami',
  ).action(async (_o, cmd: Command) => {
    const o = opts(cmd);
    const c = client(cmd);
    const me = await c.get<WhoamiResponse>('/api/auth/whoami');
    if (o.json) return printJson({ hubUrl: c.hubUrl, ...me });
    const lines = [`hub: ${c.hubUrl}`, `email: ${me.email}`, `org role: ${me.orgRole ?? 'none'}`];
    const can = ORG_POWERS[me.orgRole ?? ''];
    if (can) lines.push(`  can: ${can}`);
    if (me.projectRoles.length === 0) {
      lines.push(
        me.orgRole === 'owner' || me.orgRole === 'admin' ? 'project roles: none set (admin on every project through the org role)' : 'project roles: none',
      );
    }
    for (const p of me.projectRoles)
      lines.push(
        `project ${p.project}: ${p.role}${p.status === 'active' ? '' : ` (${p.status})`}${me.orgRole === 'owner' || me.orgRole === 'admin' ? ' (set explicitly: it replaces the org default there)' : ''}`,
      );
    process.stdout.write(lines.map((l) => terminalSafe(l)).join('\n') + '\n');
  });
}

/** What an org role allows (docs/operators.md "Roles"). */
const ORG_POWERS: Record<string, string> = {
  owner: 'everything: create projects, invite operators (owners too), change or remove anyone, and act as admin on every project',
  admin: 'create projects, invite operators (not owners), manage members ranked below admin, and act as admin on every project',
  member: 'only what a project role grants on each project',
};
