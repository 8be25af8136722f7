import type { Command } from 'commander';
import { registerServerCommands } from './servers.js';
import { registerAuthCommands } from './auth.js';
import { registerContextCommands } from './context.js';
import { registerProjectCommands } from './projects.js';
import { registerConnectionCommands } from './connections.js';
import { registerMemberCommands } from './members.js';
import { registerAuditCommands } from './audit.js';
import { registerApplyCommand } from './apply.js';
import { registerReleaseCommands } from './release.js';
import { registerSchemaCommands } from './schema.js';
import { registerApiKeyCommands } from './apikey.js';
import { registerWebhookCommands } from './webhooks.js';
import { registerLeakCommands } from './leaks.js';
import { registerGenCommands } from './gen.js';
import { registerStatusCommand } from './status.js';
import { registerCompletionCommand } from './completion.js';

/** One file per command group. Keep these imports light: heavy modules load inside actions. */
export function registerCommands(program: Command): void {
  registerServerCommands(program);
  registerAuthCommands(program);
  registerContextCommands(program);
  registerProjectCommands(program);
  registerConnectionCommands(program);
  registerMemberCommands(program); // after projects: adds `project invite|members`
  registerAuditCommands(program);
  registerApplyCommand(program);
  registerReleaseCommands(program);
  registerSchemaCommands(program);
  registerApiKeyCommands(program);
  registerWebhookCommands(program);
  registerLeakCommands(program);
  registerGenCommands(program);
  registerStatusCommand(program);
  registerCompletionCommand(program); // last: it completes every command registered before it
}
