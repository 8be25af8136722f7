// `stk bridge start` from the TypeScript source (run with `node --import tsx`), so CPU profiles name
// src/ files instead of bundle chunks. Only the benchmark's profile step uses it.
import { main } from '../../src/cli/main.js';

await main([process.argv[0]!, 'stk', 'bridge', 'start']);
