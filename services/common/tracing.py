"""OpenTelemetry tracing: W3C trace context from partners and settlement into the ledger.

Off unless COALITION_TRACING_EXPORTER says where spans go (otlp, console). When off, no tracer
provider is made, the gRPC server gets no interceptor and the ledger channel no client
interceptor: a call pays nothing for tracing.

When on, each server gets its own tracer provider (one per server, not the process-wide one:
`make run` runs three services in one process) and opentelemetry-instrumentation-grpc's aio
interceptors: the server interceptor opens a server span per call, taking the caller's
`traceparent` from the request metadata; the ledger client's interceptor opens a client span
and sends its `traceparent`. A merged batch (services/common/coalescer.py) is a span of its own,
`merged <kind>`, linked to the span of every call it carries: its ledger call and transaction
are traced under it, so each call's trace leads to them. The batch span is the child of its
first call's span (for a batch inside a batch, the enclosing batch's span).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.config import env_choice, env_str

EXPORTERS = ("none", "console", "otlp")


@dataclass(frozen=True, slots=True)
class TracingSettings:
    exporter: str = "none"  # none, console or otlp (OTEL_EXPORTER_OTLP_ENDPOINT, default localhost:4317)
    service_name: str = ""  # the spans' service.name; "" -> coalition-<service>

    @classmethod
    def from_env(cls) -> TracingSettings:
        return cls(
            exporter=env_choice("COALITION_TRACING_EXPORTER", "none", EXPORTERS),
            service_name=env_str("COALITION_TRACING_SERVICE_NAME", ""),
        )

    @property
    def enabled(self) -> bool:
        return self.exporter != "none"


def tracer_provider(settings: TracingSettings, service: str, span_processor=None):
    """A tracer provider for one server, or None when tracing is off and no processor is given.

    `span_processor` (e.g. a SimpleSpanProcessor over an InMemorySpanExporter in tests) replaces
    the exporter named by the settings."""
    if span_processor is None and not settings.enabled:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    name = settings.service_name or f"coalition-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if span_processor is None:
        if settings.exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            span_processor = BatchSpanProcessor(OTLPSpanExporter())
        else:
            span_processor = BatchSpanProcessor(ConsoleSpanExporter())
    provider.add_span_processor(span_processor)
    return provider


def server_interceptor(provider):
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return aio_server_interceptor(tracer_provider=provider)


def client_interceptors(provider) -> list:
    """For a grpc.aio channel: a client span per call, its trace context sent in the metadata."""
    if provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors(tracer_provider=provider))


def batch_tracer(provider):
    """The tracer of merged batches (services/common/coalescer.py), or None when tracing is off."""
    return None if provider is None else provider.get_tracer("coalition.batches")


def current_span_context():
    """The span context of the call being handled here, for a batch span's link to it."""
    from opentelemetry import trace

    return trace.get_current_span().get_span_context()


def batch_span(tracer, kind: str, span_contexts: list, items: int):
    """A span for one merged batch: the child of its first call's span, linked to each call's
    (calls without a valid span context are skipped)."""
    from opentelemetry import trace

    valid = [context for context in span_contexts if context is not None and context.is_valid]
    # Not the span current in the batch's task: that task drains batch after batch, and every
    # later one would land in the trace of the call that happened to start it.
    parent = trace.set_span_in_context(trace.NonRecordingSpan(valid[0])) if valid else None
    return tracer.start_as_current_span(
        f"merged {kind}",
        context=parent,
        links=[trace.Link(context) for context in valid],
        attributes={"coalition.batch.items": items},
    )
