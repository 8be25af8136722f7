/**
 * One word for a POSIX shell command line the user may paste: bare when it holds only characters no
 * shell treats specially, else single-quoted (a `'` inside becomes `'\''`).
 */
export const shellWord = (s: string): string => (/^[A-Za-z0-9_./:@%+=-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
