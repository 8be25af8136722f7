/**
 * OpenTelemetry traces (docs/observability.md): a tracer provider per process with the OTLP/HTTP
 * exporter (standard OTEL_* variables: endpoint, headers, timeout, batch settings, sampler), and the
 * spans Hub and Bridge make. Imported only when tracing is on (./tracing-config.ts).
 *
 * The provider is not registered globally: each process (and each of Hub and Bridge in `stk dev`)
 * holds its own and passes spans explicitly. An incoming W3C `traceparent` header is continued.
 */
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span, type Tracer } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources';
import {
  BatchSpanProcessor,
  ConsoleSpanExporter,
  NodeTracerProvider,
  SimpleSpanProcessor,
  type SpanExporter,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-node';

/**
 * Span times from one high-resolution clock (epoch ms with a fraction): the SDK's default anchors each
 * span on its own Date.now() reading, which puts sibling spans up to a millisecond out of order.
 */
const now = () => performance.timeOrigin + performance.now();

/** One span and the context its children start in. */
export class TraceSpan {
  #ended = false;
  constructor(
    readonly tracer: Tracer,
    readonly span: Span,
    readonly ctx: Context,
  ) {}

  child(name: string, attributes?: Attributes): TraceSpan {
    const s = this.tracer.startSpan(name, { kind: SpanKind.INTERNAL, attributes, startTime: now() }, this.ctx);
    return new TraceSpan(this.tracer, s, trace.setSpan(this.ctx, s));
  }

  set(key: string, value: string | number | boolean): void {
    this.span.setAttribute(key, value);
  }

  fail(message: string): void {
    if (this.#ended) return;
    this.span.setStatus({ code: SpanStatusCode.ERROR, message });
  }

  /** Ends the span (once: a second call does nothing). */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.span.end(now());
  }
}

const propagator = new W3CTraceContextPropagator();
const headerGetter = {
  keys: (h: Record<string, unknown>) => Object.keys(h),
  get: (h: Record<string, unknown>, k: string) => h[k] as string | string[] | undefined,
};

export class Tracing {
  readonly tracer: Tracer;
  constructor(readonly provider: NodeTracerProvider) {
    this.tracer = provider.getTracer('santokit');
  }

  /** A server span for an incoming request, continuing the caller's trace when it sent `traceparent`. */
  request(name: string, headers: Record<string, unknown>, attributes: Attributes): TraceSpan {
    const parent = headers.traceparent === undefined ? ROOT_CONTEXT : propagator.extract(ROOT_CONTEXT, headers, headerGetter);
    const s = this.tracer.startSpan(name, { kind: SpanKind.SERVER, attributes, startTime: now() }, parent);
    return new TraceSpan(this.tracer, s, trace.setSpan(parent, s));
  }

  /** Exports what is buffered and stops (on close). */
  async shutdown(): Promise<void> {
    await this.provider.shutdown().catch(() => {});
  }
}

/**
 * The process's tracing: OTEL_TRACES_EXPORTER `otlp` (default; OTLP over HTTP/JSON to
 * OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, batched) or `console`; `exporter` replaces it (tests).
 * The service name is OTEL_SERVICE_NAME, else `service`.
 */
export function createTracing(service: string, env: NodeJS.ProcessEnv = process.env, exporter?: SpanExporter): Tracing {
  let processor: SpanProcessor;
  if (exporter) processor = new SimpleSpanProcessor(exporter);
  else if ((env.OTEL_TRACES_EXPORTER ?? '').trim().toLowerCase() === 'console') processor = new SimpleSpanProcessor(new ConsoleSpanExporter());
  else processor = new BatchSpanProcessor(new OTLPTraceExporter());
  const provider = new NodeTracerProvider({
    resource: defaultResource().merge(resourceFromAttributes({ 'service.name': env.OTEL_SERVICE_NAME?.trim() || service })),
    spanProcessors: [processor],
  });
  return new Tracing(provider);
}
