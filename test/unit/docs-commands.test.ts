import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { buildProgram } from '../../src/cli/main.js';

/**
 * The docs cannot drift from the CLI: every `stk` command in a shell block of README.md and docs/*.md
 * (and every `stk …` in inline code) must name subcommands and flags the real command tree has, with no
 * more arguments than the command takes; shell blocks run the CLI one way, `npx stk`.
 */

const FILES = [
  'README.md',
  ...readdirSync('docs')
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];

interface Use {
  file: string;
  line: number;
  text: string;
  /** the words after `stk`, up to the end of that command */
  words: string[];
  /** from a shell block (strict) or inline code (subcommands and -- flags only) */
  strict: boolean;
}

/** Shell words of `s` up to the end of the command (`|`, `;`, `&&`, `)`, a redirect or a comment). */
function words(s: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quote: string | null = null;
  let has = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (quote) {
      if (c === quote) quote = null;
      else cur += c;
      continue;
    }
    if (c === "'" || c === '"') {
      quote = c;
      has = true;
      continue;
    }
    if (/\s/.test(c)) {
      if (has || cur) out.push(cur);
      cur = '';
      has = false;
      continue;
    }
    if (c === '|' || c === ';' || c === ')' || c === '<' || c === '>' || c === '#' || (c === '&' && s[i + 1] === '&')) break;
    cur += c;
  }
  if (has || cur) out.push(cur);
  return out;
}

/** `stk` at a command position: line start, after `npx` (or `npx --no`, the printed invite lines), `$ `, a pipe, `$(`, `<(`, `;`, `&&`. */
const STK_RE = /(^|[\s;|&(]|\$\(|<\()((?:npx\s+(?:--no\s+)?)?)stk\s+(?=\S)/g;

function uses(): { found: Use[]; bare: string[] } {
  const found: Use[] = [];
  const bare: string[] = [];
  for (const file of FILES) {
    const lines = readFileSync(file, 'utf8').split('\n');
    let fence: string | null = null;
    for (let i = 0; i < lines.length; i++) {
      const raw = lines[i]!;
      const m = /^```(\w*)/.exec(raw);
      if (m) {
        fence = fence === null ? m[1]! : null;
        continue;
      }
      const shell = fence !== null && ['sh', 'bash', 'shell', 'text', ''].includes(fence);
      if (shell) {
        // text blocks: only the commands shown after a `$ ` prompt; continuation lines are joined
        let line = raw;
        if (fence === 'text' || fence === '') {
          if (!line.startsWith('$ ')) continue;
          line = line.slice(2);
        }
        while (line.endsWith('\\') && i + 1 < lines.length) line = line.slice(0, -1) + ' ' + lines[++i]!;
        line = line.replace(/(^|\s)#.*$/, ''); // a comment is not a command
        for (const mm of line.matchAll(STK_RE)) {
          const rest = line.slice(mm.index + mm[0].length);
          found.push({ file, line: i + 1, text: line.trim(), words: words(rest), strict: true });
          if (!mm[2]) bare.push(`${file}:${i + 1}: ${line.trim()}`);
        }
      } else if (fence === null) {
        for (const mm of raw.matchAll(/`((?:npx (?:--no )?)?stk [^`]+)`/g)) {
          // a table cell's `stk release list\|current`: each alternative is a command
          const ws = words(mm[1]!.replace(/\\\|/g, '\u0000').replace(/^(npx (--no )?)?stk /, ''));
          const alts = ws.map((x) => x.split('\u0000'));
          const n = Math.max(...alts.map((a) => a.length));
          for (let k = 0; k < n; k++) found.push({ file, line: i + 1, text: mm[1]!, words: alts.map((a) => a[Math.min(k, a.length - 1)]!), strict: false });
        }
      }
    }
  }
  return { found, bare };
}

function flagsOf(cmd: Command): Map<string, boolean> {
  const m = new Map<string, boolean>();
  for (let c: Command | null = cmd; c; c = c.parent) {
    for (const o of c.options) {
      if (o.hidden) continue; // an earlier spelling kept working, not one to document
      const takesValue = o.required || o.optional;
      if (o.long) m.set(o.long, takesValue);
      if (o.short) m.set(o.short, takesValue);
    }
  }
  m.set('--help', false).set('-h', false);
  return m;
}

/** What is wrong with this use, or undefined. */
function check(program: Command, u: Use): string | undefined {
  let cmd = program;
  let i = 0;
  const w = u.words.filter((x) => x !== '…' && !x.startsWith('['));
  // subcommands
  while (i < w.length && cmd.commands.length) {
    const word = w[i]!;
    if (word.startsWith('-')) break;
    const sub = cmd.commands.find((c) => c.name() === word || c.aliases().includes(word));
    if (!sub) {
      if (word === 'help') return undefined;
      return `unknown command '${[...pathOf(cmd), word].join(' ')}'`;
    }
    cmd = sub;
    i++;
  }
  if (cmd.commands.length && i === w.length && u.strict) return `'${pathOf(cmd).join(' ')}' needs a subcommand`;
  const flags = flagsOf(cmd);
  let positionals = 0;
  for (; i < w.length; i++) {
    const word = w[i]!;
    if (word.startsWith('-') && word.length > 1 && !/^-\d/.test(word)) {
      const name = word.split('=')[0]!;
      if (name === '--no-expiry' || flags.has(name)) {
        if (flags.get(name) && !word.includes('=')) i++; // its value
        continue;
      }
      if (!u.strict && !name.startsWith('--')) continue;
      return `'${pathOf(cmd).join(' ')}' has no flag ${name}`;
    }
    positionals++;
  }
  const args = cmd.registeredArguments;
  const max = args.some((a) => a.variadic) ? Infinity : args.length;
  if (u.strict && positionals > max) return `'${pathOf(cmd).join(' ')}' takes at most ${max} argument(s), got ${positionals}`;
  return undefined;
}

const pathOf = (c: Command): string[] => (c.parent ? [...pathOf(c.parent), c.name()] : ['stk']);

describe('README and docs/ use only stk commands and flags that exist', () => {
  const { found, bare } = uses();

  it("finds the docs' commands (the extraction works)", () => {
    expect(found.filter((u) => u.strict).length).toBeGreaterThan(40);
    expect(found.some((u) => u.file === 'README.md' && u.words.join(' ').startsWith('apikey create'))).toBe(true);
  });

  it('every subcommand, flag and argument count in a shell block or inline `stk …` exists in the CLI', () => {
    const program = buildProgram();
    const problems = found
      .map((u) => [u, check(program, u)] as const)
      .filter(([, p]) => p)
      .map(([u, p]) => `${u.file}:${u.line}: ${p}\n    ${u.text}`);
    expect(problems).toEqual([]);
  });

  it('the checker catches drift: a made-up flag, subcommand or extra argument is reported', () => {
    const program = buildProgram();
    const u = (text: string): Use => ({ file: 'x', line: 1, text, words: words(text), strict: true });
    expect(check(program, u('apikey create x --project p --env e --roles a -q'))).toBeUndefined();
    expect(check(program, u('apikey create x --project p --colour red'))).toMatch(/has no flag --colour/);
    expect(check(program, u('apikey destroy x'))).toMatch(/unknown command 'stk apikey destroy'/);
    expect(check(program, u('apikey revoke a b'))).toMatch(/at most 1 argument/);
    expect(check(program, u('context set --hub-url http://x'))).toMatch(/has no flag --hub-url/); // hidden: not for docs
  });

  it('shell blocks run the CLI one way: npx stk', () => {
    expect(bare).toEqual([]);
  });
});
