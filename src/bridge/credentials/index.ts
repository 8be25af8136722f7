export { KeyTable, toEntry, type KeyEntry } from './key-table.js';
export { KeyRateLimiter, FailureLimiter } from './limits.js';
export { UsageCounter } from './usage.js';
export { ApiKeyVerifier, verifyKey, type VerifyFailure, type VerifierOptions, type VerifierState } from './verifier.js';
