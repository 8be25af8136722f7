/**
 * One word for a POSIX shell command line the user may paste: bare when it holds only characters no
 * shell treats specially (and does not start with `=`, which zsh expands to a command's path), else
 * single-quoted (a `'` inside becomes `'\''`). The one quoting of every line the CLI, the dev stack
 * and the Hub print to be pasted.
 */
export const shellWord = (s: string): string => (/^(?!=)[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

/**
 * How a pasted line runs `stk`: `npx --no` uses the stk of the project it is pasted in (a checkout or an
 * install of santokit) and never downloads a package: a bare `npx stk` outside one would fetch whatever
 * npm package is called `stk` and hand it the invite code on its command line.
 */
export const STK_RUN = 'npx --no stk';

/**
 * The one line an invitee runs to accept an invite (it asks for their password on the terminal):
 * printed by `stk org|project invite` and answered by the Hub's upstream invite routes.
 */
export function inviteAcceptCommand(hubUrl: string, email: string, code: string): string {
  return [`${STK_RUN} invite accept`, '--hub', shellWord(hubUrl), '--email', shellWord(email), '--code', shellWord(code)].join(' ');
}
