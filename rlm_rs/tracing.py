"""OpenTelemetry tracing for every RLM-RS process: off by default, OTLP when on.

`configure_tracing(component)` installs a tracer provider that exports over OTLP/gRPC
when RLM_OTEL_ENABLED=1 (endpoint OTEL_EXPORTER_OTLP_ENDPOINT, default the collector's
localhost:4317); otherwise every span is a no-op. `span(name, **attrs)` wraps a unit of
work (a request, a turn, a step, a provider call); the gRPC interceptors carry the W3C
`traceparent` across gateway -> control plane -> pool so one trace spans all three.
Never put prompts, model output, document text or secrets into span attributes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from rlm_rs.settings import Settings, get_settings

_provider: TracerProvider | None = None
_TRACER_NAME = "rlm_rs"
_ATTRIBUTE_TYPES = (str, bool, int, float)


def configure_tracing(
    component: str, settings: Settings | None = None, exporter: SpanExporter | None = None
) -> bool:
    """Install this process's tracer provider; False (and no-op spans) when tracing is off.

    `exporter` replaces the OTLP exporter (tests pass an in-memory one; it turns tracing on).
    """
    global _provider
    settings = settings or get_settings()
    if exporter is None and not settings.otel_enabled:
        return False
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = (
            OTLPSpanExporter(endpoint=settings.otel_endpoint)
            if settings.otel_endpoint
            else OTLPSpanExporter()
        )
    provider = TracerProvider(resource=Resource.create({"service.name": f"rlm-rs-{component}"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    if _provider is not None:
        _provider.shutdown()
    _provider = provider
    return True


def shutdown_tracing() -> None:
    """Flush and stop the exporter (call on process exit)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def force_flush() -> None:
    if _provider is not None:
        _provider.force_flush()


def tracer() -> trace.Tracer:
    if _provider is None:
        return trace.NoOpTracer()
    return _provider.get_tracer(_TRACER_NAME)


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if isinstance(v, _ATTRIBUTE_TYPES)}


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[trace.Span]:
    """A span as the current one; exceptions are recorded and re-raised."""
    with tracer().start_as_current_span(name, attributes=_clean(attributes)) as current:
        yield current


# ------------------------------------------------------------ propagation
def inject_metadata(metadata: Sequence[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """gRPC metadata plus the current trace context (`traceparent`, `tracestate`)."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return [*(metadata or ()), *carrier.items()]


def context_from_metadata(metadata: Sequence[tuple[str, Any]] | None) -> otel_context.Context:
    carrier = {k.lower(): v for k, v in (metadata or ()) if isinstance(v, str)}
    return extract(carrier)


class _ClientCallDetails(grpc.ClientCallDetails):
    def __init__(self, details: grpc.ClientCallDetails, metadata: Sequence[tuple[str, str]]) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = tuple(metadata)
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class ClientTracingInterceptor(grpc.UnaryUnaryClientInterceptor):
    """A client span per unary call, its context sent in the call's metadata.

    Use: `grpc.intercept_channel(channel, ClientTracingInterceptor())`."""

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        with span(f"grpc.client {details.method}", rpc_method=str(details.method)):
            metadata = inject_metadata(list(details.metadata or ()))
            return continuation(_ClientCallDetails(details, metadata), request)


class AioClientTracingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """The asyncio-channel twin: `grpc.aio.insecure_channel(t, interceptors=[...])`."""

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        with span(f"grpc.client {details.method}", rpc_method=str(details.method)):
            metadata = inject_metadata(list(details.metadata or ()))
            return await continuation(_ClientCallDetails(details, metadata), request)


class ServerTracingInterceptor(grpc.ServerInterceptor):
    """A server span per unary RPC, child of the caller's span when it sent one.

    Use: `grpc.server(executor, interceptors=[ServerTracingInterceptor()])`."""

    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = details.method
        parent = context_from_metadata(details.invocation_metadata)

        def traced(request: Any, context: grpc.ServicerContext) -> Any:
            token = otel_context.attach(parent)
            try:
                with span(f"grpc.server {method}", rpc_method=method):
                    return inner(request, context)
            finally:
                otel_context.detach(token)

        return grpc.unary_unary_rpc_method_handler(
            traced,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
