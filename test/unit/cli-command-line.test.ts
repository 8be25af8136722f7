/**
 * The lines the CLI prints to run (`stk apply … --adopt` after a refusal) are pasted into a shell:
 * every word must come back from a real POSIX shell exactly as it went in.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { shellWord } from '../../src/cli/commands/common.js';

describe('shellWord', () => {
  it('leaves plain words alone and quotes the rest so that bash reads them back unchanged', () => {
    expect(shellWord('shop_1a2b3c4d')).toBe('shop_1a2b3c4d');
    expect(shellWord('--dir')).toBe('--dir');
    expect(shellWord('http://127.0.0.1:4000/hub')).toBe('http://127.0.0.1:4000/hub');
    expect(shellWord('my app')).toBe(`'my app'`);
    expect(shellWord('a,b')).toBe('a,b');
    // zsh expands a word starting with '=' to the path of that command
    expect(shellWord('=ls')).toBe(`'=ls'`);
    expect(shellWord('a=b')).toBe('a=b');
    const words = ['my app', "it's", 'a"b', '$(rm -rf ~)', '`id`', 'x;y|z&', 'tab\there', 'star*?[', '~user', '!bang', 'new\nline', '', 'é ü', "''", '=ls'];
    const out = execFileSync('bash', ['-c', `printf '%s\\0' ${words.map(shellWord).join(' ')}`]).toString();
    expect(out.split('\0').slice(0, -1)).toEqual(words);
  });
});
