"""OpenTelemetry tracing: W3C trace context from partners and settlement into the ledger.

Off unless COALITION_TRACING_EXPORTER says where spans go (otlp, console). When off, no tracer
provider is made, the gRPC server gets no interceptor and the ledger channel no client
interceptor: a call pays nothing for tracing.

When on, each server gets its own tracer provider (one per server, not the process-wide one:
`make run` runs three services in one process) and opentelemetry-instrumentation-grpc's aio
interceptors: the server interceptor opens a server span per call, taking the caller's
`traceparent` from the request metadata; the ledger client's interceptor opens a client span
and sends its `traceparent`. Merged ledger calls (services/common/coalescer.py) run in the
context of the call that started the batch, so a merged CreateTransfers is traced under that
call's span.
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
