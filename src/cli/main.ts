import { Command, CommanderError } from 'commander';
import { CliError } from './errors.js';
import { red, terminalSafe } from './output.js';
import { registerCommands } from './commands/index.js';

declare const __STK_VERSION__: string;
const VERSION = typeof __STK_VERSION__ === 'string' ? __STK_VERSION__ : '0.0.0-dev';

export function buildProgram(): Command {
  const program = new Command('stk')
    .description('Santokit operator CLI: projects, schema apply, releases, API keys')
    .version(VERSION, '-v, --version')
    .option('--hub <url>', 'Hub URL (overrides STK_HUB_URL and the stored login)')
    .option('--no-input', 'never prompt (same as STK_NO_INPUT=1); a missing value is an error instead')
    .showHelpAfterError('(run with --help for usage)')
    // every command's help lists the flags that work everywhere (--hub, --no-input)
    .configureHelp({ showGlobalOptions: true })
    .exitOverride();
  program.configureOutput({ outputError: (s, write) => write(s) });
  program.hook('preAction', (cmd) => {
    if (cmd.opts().input === false) process.env.STK_NO_INPUT = '1';
  });
  registerCommands(program);
  return program;
}

/**
 * `stk apikey list | head -1`: the reader is gone, so the rest of the output has nowhere to go. Like
 * any Unix tool killed by SIGPIPE the CLI stops there, quietly and successfully (Node ignores SIGPIPE
 * and would otherwise crash with an EPIPE stack trace, exit 1).
 */
export function exitQuietlyOnClosedPipe(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(0);
      throw e;
    });
  }
}

export async function main(argv = process.argv): Promise<void> {
  exitQuietlyOnClosedPipe();
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (e) {
    process.exitCode = reportError(e);
  }
}

export function reportError(e: unknown): number {
  if (e instanceof CommanderError) {
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return 0;
    return e.exitCode === 0 ? 0 : 2;
  }
  if (e instanceof CliError) {
    // the message is often the Hub's (and parts of it a database server's): print it cleaned
    process.stderr.write(`${red('Error:', process.stderr)} ${terminalSafe(e.message)}\n`);
    if (e.hint) process.stderr.write(`  ${terminalSafe(e.hint)}\n`);
    return e.exitCode;
  }
  const msg = e instanceof Error ? e.message : String(e);
  process.stderr.write(`${red('Error:', process.stderr)} ${terminalSafe(msg)}\n`);
  if (process.env.STK_DEBUG && e instanceof Error) process.stderr.write(String(e.stack) + '\n');
  return 1;
}
