import type { Reporter } from 'vitest/reporters';

type Task = { type: string; mode?: string; result?: { state?: string }; tasks?: Task[] };

/** Prints one plain closing line, `tests: N passed, N failed, N skipped`, after vitest's own summary. */
export default class SummaryReporter implements Reporter {
  onFinished(files: Task[] = []) {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    const walk = (t: Task) => {
      if (t.type === 'test') {
        const s = t.result?.state;
        if (s === 'pass') passed++;
        else if (s === 'fail') failed++;
        else skipped++;
      }
      for (const c of t.tasks ?? []) walk(c);
    };
    for (const f of files) {
      walk(f);
      if (f.result?.state === 'fail' && !(f.tasks ?? []).length) failed++; // a file that failed to load
    }
    process.stdout.write(`\ntests: ${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  }
}
