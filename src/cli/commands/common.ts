import type { Command } from 'commander';
import { HubClient } from '../client.js';

/** Global options (e.g. --hub) merged with the command's own. */
export function opts<T = Record<string, unknown>>(cmd: Command): T & { hub?: string; json?: boolean } {
  return cmd.optsWithGlobals() as T & { hub?: string; json?: boolean };
}

export function client(cmd: Command, anonymous = false): HubClient {
  return new HubClient({ hub: opts(cmd).hub, anonymous });
}

export function example(cmd: Command, ...lines: string[]): Command {
  return cmd.addHelpText('after', '\nExamples:\n' + lines.map((l) => `  $ ${l}`).join('\n'));
}
