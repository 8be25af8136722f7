/**
 * Whether OpenTelemetry traces are on (docs/observability.md), decided from the standard variables
 * without loading any OpenTelemetry code: on when OTEL_EXPORTER_OTLP_ENDPOINT,
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_TRACES_EXPORTER (otlp, console) is set; off when
 * OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true. With traces off the SDK is never imported and
 * no span object is ever created.
 *
 * Also the Hub's "span of the request being handled" (an AsyncLocalStorage created only once tracing
 * is on), so a change made deep in a service can hang its spans under the request that made it.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { TraceSpan } from './tracing.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** this request's server span (null with tracing off; declared up front by Hub and Bridge) */
    stkTrace: TraceSpan | null;
  }
}

export function tracingWanted(env: NodeJS.ProcessEnv = process.env): boolean {
  if ((env.OTEL_SDK_DISABLED ?? '').trim().toLowerCase() === 'true') return false;
  const exporter = (env.OTEL_TRACES_EXPORTER ?? '').trim().toLowerCase();
  if (exporter === 'none') return false;
  return exporter !== '' || !!env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim() || !!env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim();
}

let active: AsyncLocalStorage<TraceSpan> | null = null;

/** The span of the request whose handler is running (null when tracing is off or outside a request). */
export function activeSpan(): TraceSpan | null {
  return active === null ? null : (active.getStore() ?? null);
}

/** Runs `fn` (a request's handler, through Fastify's `done`) with `span` as its active span. */
export function runWithSpan(span: TraceSpan, fn: () => void): void {
  (active ??= new AsyncLocalStorage<TraceSpan>()).run(span, fn);
}
