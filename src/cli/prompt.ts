import { createInterface } from 'node:readline';
import { UsageError } from './errors.js';

export const canPrompt = () => Boolean(process.stdin.isTTY && process.stderr.isTTY) && process.env.STK_NO_INPUT !== '1';

/**
 * A confirmation is asked only of a person: stdin and stdout are terminals and neither --no-input nor
 * STK_NO_INPUT=1 is set. Scripts (piped output, CI) never see a prompt.
 */
export const canConfirm = () => canPrompt() && Boolean(process.stdout.isTTY);

export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}

export async function promptLine(question: string): Promise<string> {
  if (!canPrompt()) throw new UsageError(`${question.replace(/:\s*$/, '')} is required (no terminal to prompt on)`);
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return await new Promise<string>((res) => rl.question(question, res));
  } finally {
    rl.close();
  }
}

/** Reads a secret without echoing it. */
export async function promptSecret(question: string): Promise<string> {
  if (!canPrompt()) throw new UsageError(`${question.replace(/:\s*$/, '')} is required: pass --password-stdin when not on a terminal`);
  process.stderr.write(question);
  const stdin = process.stdin;
  stdin.setRawMode(true);
  stdin.resume();
  stdin.setEncoding('utf8');
  return await new Promise<string>((resolve, reject) => {
    let value = '';
    const onData = (ch: string) => {
      for (const c of ch) {
        if (c === '\r' || c === '\n') {
          done();
          return resolve(value);
        }
        if (c === '\u0003') {
          done();
          return reject(new UsageError('cancelled'));
        }
        if (c === '\u007f' || c === '\b') value = value.slice(0, -1);
        else value += c;
      }
    };
    const done = () => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
    };
    stdin.on('data', onData);
  });
}

/** --password-stdin reads stdin; otherwise prompt without echo. */
export async function getPassword(fromStdin: boolean | undefined, question = 'Password: '): Promise<string> {
  if (fromStdin) return readStdin();
  return promptSecret(question);
}
