/** `stk dev`: Hub + Bridge + embedded PostgreSQL in one process. */
export async function runDev(): Promise<void> {
  throw new Error('stk dev is not implemented yet');
}
