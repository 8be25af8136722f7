import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { example } from './common.js';

/**
 * `stk completion bash|zsh|fish`: a completion script generated from the command tree itself, so it
 * can never list a command or flag the CLI does not have (commander has none built in).
 */

interface Node {
  /** command words from the root, e.g. ['apikey', 'create'] */
  path: string[];
  subcommands: string[];
  /** long flags (and short ones), e.g. --project, -q */
  flags: string[];
}

function flagsOf(cmd: Command): string[] {
  const out: string[] = [];
  for (const o of cmd.options) {
    if (o.hidden) continue;
    if (o.long) out.push(o.long);
    if (o.short) out.push(o.short);
  }
  return out;
}

/** Every command with its subcommands and flags (global flags included everywhere). */
export function commandTree(program: Command): Node[] {
  const global = flagsOf(program);
  const nodes: Node[] = [];
  const walk = (cmd: Command, path: string[]) => {
    const subs = cmd.commands.filter((c) => !(c as unknown as { _hidden?: boolean })._hidden && c.name() !== 'help');
    nodes.push({ path, subcommands: subs.map((c) => c.name()), flags: [...new Set([...flagsOf(cmd), ...global, '--help'])] });
    for (const c of subs) walk(c, [...path, c.name()]);
  };
  walk(program, []);
  return nodes;
}

function bash(nodes: Node[]): string {
  const paths = nodes.filter((n) => n.path.length).map((n) => `/${n.path.join('/')}`);
  const cases = nodes.map((n) => `    "${n.path.length ? '/' + n.path.join('/') : ''}") words="${[...n.subcommands, ...n.flags].join(' ')}" ;;`);
  return `# stk completion for bash: source <(stk completion bash)   (generated from stk's command tree)
_stk_complete() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" path="" w i words=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    [[ "$w" == -* ]] && continue
    case "$path/$w" in
      ${paths.join('|')}) path="$path/$w" ;;
    esac
  done
  case "$path" in
${cases.join('\n')}
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _stk_complete stk
`;
}

function zsh(nodes: Node[]): string {
  return `#compdef stk
# stk completion for zsh: source <(stk completion zsh)   (uses zsh's bash completion support)
autoload -U +X bashcompinit && bashcompinit
${bash(nodes).split('\n').slice(1).join('\n')}`;
}

function fish(nodes: Node[]): string {
  const lines = ["# stk completion for fish: stk completion fish | source   (generated from stk's command tree)", 'complete -c stk -f'];
  for (const n of nodes) {
    // the words of this command's path seen, and none of its subcommands yet
    const seen = n.path.map((w) => `__fish_seen_subcommand_from ${w}`);
    const cond =
      n.path.length === 0
        ? '__fish_use_subcommand'
        : [...seen, ...(n.subcommands.length ? [`not __fish_seen_subcommand_from ${n.subcommands.join(' ')}`] : [])].join('; and ');
    if (n.subcommands.length) lines.push(`complete -c stk -n '${cond}' -a '${n.subcommands.join(' ')}'`);
    for (const f of n.flags) {
      if (n.path.length === 0) continue; // global flags are listed with every command
      lines.push(f.startsWith('--') ? `complete -c stk -n '${cond}' -l ${f.slice(2)}` : `complete -c stk -n '${cond}' -s ${f.slice(1)}`);
    }
  }
  return lines.join('\n') + '\n';
}

export function registerCompletionCommand(program: Command): void {
  example(
    program
      .command('completion')
      .description('print a shell completion script for bash, zsh or fish')
      .argument('<shell>', 'bash, zsh or fish')
      .addHelpText('after', "\nIt completes the command `stk` (a global install or `npm link`, or `alias stk='npx stk'`)."),
    'source <(stk completion bash)        # in ~/.bashrc',
    'source <(stk completion zsh)         # in ~/.zshrc',
    'stk completion fish | source         # in ~/.config/fish/config.fish',
  ).action((shell: string) => {
    const nodes = commandTree(program);
    const gen = { bash, zsh, fish }[shell as 'bash'];
    if (!gen) throw new UsageError(`unknown shell ${JSON.stringify(shell)}: use bash, zsh or fish`);
    process.stdout.write(gen(nodes));
  });
}
