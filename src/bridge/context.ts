import type { FastifyBaseLogger, FastifyRequest } from 'fastify';
import type { BridgeConfig } from './config.js';

/**
 * Who is calling. For API keys `sub` is the key id; the key's project+env binding is authoritative.
 */
export interface Principal {
  kind: 'apikey' | 'enduser' | 'dev';
  sub: string;
  roles: string[];
  project: string;
  env: string;
}

/** Verifies the request's credential in memory (no Hub hop). Throws AppError 401/403/429/503. */
export interface CredentialVerifier {
  authenticate(req: FastifyRequest): Principal;
}

export interface BridgeContext {
  config: BridgeConfig;
  log: FastifyBaseLogger;
  /** set by credentials/ */
  credentials: CredentialVerifier;
  /** cleanup callbacks run on close (pools, streams, timers) */
  onClose: Array<() => Promise<void> | void>;
  /** extension slots filled by the modules that own them (release cache, sync, …) */
  [slot: string]: unknown;
}
