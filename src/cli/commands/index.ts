import type { Command } from 'commander';
import { registerServerCommands } from './servers.js';
import { registerAuthCommands } from './auth.js';
import { registerContextCommands } from './context.js';

/** One file per command group. Keep these imports light: heavy modules load inside actions. */
export function registerCommands(program: Command): void {
  registerServerCommands(program);
  registerAuthCommands(program);
  registerContextCommands(program);
}
