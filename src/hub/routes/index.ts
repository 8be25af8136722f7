import type { FastifyInstance } from 'fastify';
import type { HubContext } from '../context.js';

/**
 * Resource route plugins. Each file owns one resource and stays thin: parse input, call a service,
 * return its result. Add new resources here.
 */
export async function registerRoutes(app: FastifyInstance, ctx: HubContext): Promise<void> {
  void app;
  void ctx;
}
