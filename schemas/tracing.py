"""OpenTelemetry traces, off unless the standard variables ask for them (docs/tracing.md).

Tracing is on in a process once ``start`` found ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) set, and neither ``OTEL_SDK_DISABLED=true`` nor
``OTEL_TRACES_EXPORTER=none``: only then is the SDK imported, with its OTLP/HTTP exporter and a
batch processor; everything else (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER`` and its argument, ``OTEL_BSP_*``, ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_PROPAGATORS``...) is read by the SDK itself, as its documentation says.

With tracing off every helper here is a constant: ``span`` hands back one shared empty context
manager, ``inject`` adds nothing, ``current_ids`` is None; no OpenTelemetry module is imported,
so the receiver's hot path costs what it cost before.

The trace of one callback crosses processes in the W3C ``traceparent`` header: the receiver puts
it in the queue message's headers (``schemas.broker``), the worker continues from it, and each
delivery hands it on (HTTP header, AMQP header, SQS attribute). Here so that both sides share
it: the receiver may import only ``schemas``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
PROPAGATED = (TRACEPARENT, TRACESTATE)

_OFF: AbstractContextManager[None] = nullcontext()
_tracer: Any = None  # the SDK's tracer, once ``start`` turned tracing on in this process
_provider: Any = None
_kinds: dict[str, Any] = {}  # "server" -> SpanKind.SERVER...


def wanted(env: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint, and the SDK not disabled."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return bool(endpoint and endpoint.strip())


def on() -> bool:
    return _tracer is not None


def start(service_name: str, wanted_here: bool) -> bool:
    """Turn tracing on in this process if the settings ask for it (``Settings.tracing``); once
    per process (a forked child keeps its parent's: the SDK restarts its export thread after a
    fork).
    ``service_name`` names the process unless ``OTEL_SERVICE_NAME`` (or ``service.name`` in
    ``OTEL_RESOURCE_ATTRIBUTES``) does. Returns whether tracing is on."""
    global _tracer, _provider, _kinds
    if _tracer is not None or not wanted_here:
        return _tracer is not None
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    # The global provider too, so that a hook's own spans (TAVUS_HOOKS) join the same trace.
    trace.set_tracer_provider(provider)
    _provider = provider
    _kinds = {kind.name.lower(): kind for kind in SpanKind}
    _tracer = provider.get_tracer("tavus_callbacks")
    log.info("tracing on: spans go to the OTLP/HTTP endpoint as %s", resource.attributes.get(
        SERVICE_NAME))  # fmt: skip
    return True


def flush(timeout_millis: int = 5000) -> None:
    """Export the spans still waiting (a worker process about to exit)."""
    if _provider is not None:
        _provider.force_flush(timeout_millis)


def shutdown() -> None:
    """Export what is waiting and turn tracing off in this process (its end; the tests)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def span(
    name: str,
    kind: str = "internal",
    attributes: Mapping[str, Any] | None = None,
    carrier: Mapping[str, Any] | None = None,
) -> AbstractContextManager[Any]:
    """A span around a block, current inside it, as a child of the current span or, given a
    ``carrier`` with a ``traceparent``, of the span that sent it. ``kind``: internal, server,
    client, producer or consumer. An exception escaping the block is recorded on it. Off: a
    shared empty context manager (the block gets None)."""
    if _tracer is None:
        return _OFF
    return _tracer.start_as_current_span(
        name,
        context=extract(carrier) if carrier else None,
        kind=_kinds[kind],
        attributes=_clean(attributes),
    )


def start_span(
    name: str,
    kind: str = "internal",
    attributes: Mapping[str, Any] | None = None,
    carrier: Mapping[str, Any] | None = None,
) -> tuple[Any, Any] | None:
    """A span made current until ``end_span``: for a start and an end that are two callbacks
    (a Celery task's signals). None when tracing is off."""
    if _tracer is None:
        return None
    from opentelemetry import context as otel_context
    from opentelemetry import trace

    parent = extract(carrier) if carrier else None
    started = _tracer.start_span(
        name, context=parent, kind=_kinds[kind], attributes=_clean(attributes)
    )
    return started, otel_context.attach(trace.set_span_in_context(started))


def end_span(
    opened: tuple[Any, Any] | None,
    error: BaseException | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> None:
    """End what ``start_span`` opened, recording ``error`` as its failure."""
    if opened is None:
        return
    from opentelemetry import context as otel_context
    from opentelemetry.trace import Status, StatusCode

    current, token = opened
    if attributes:
        current.set_attributes(_clean(attributes))
    if error is not None:
        current.record_exception(error)
        current.set_status(Status(StatusCode.ERROR, type(error).__name__))
    try:
        otel_context.detach(token)
    finally:
        current.end()


def annotate(**attributes: Any) -> None:
    """Set ``attributes`` on the current span (None values are left out)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes(_clean(attributes))


def failed(why: str) -> None:
    """Mark the current span as failed with ``why`` (an answer that is no exception: a 5xx)."""
    if _tracer is None:
        return
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    trace.get_current_span().set_status(Status(StatusCode.ERROR, why))


def inject(carrier: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Add the current span's ``traceparent`` (and ``tracestate``) to ``carrier``: headers of
    a queue message, an HTTP request, an AMQP message. Off, or no span: ``carrier`` unchanged."""
    if _tracer is not None:
        from opentelemetry import propagate

        propagate.inject(carrier)
    return carrier


def extract(carrier: Mapping[str, Any]) -> Any:
    """The context ``carrier``'s ``traceparent`` names (for a child of it)."""
    from opentelemetry import propagate

    return propagate.extract({key: str(value) for key, value in carrier.items() if value})


def current_ids() -> tuple[str, str] | None:
    """The current span's trace id and span id, in hex (as ``traceparent`` writes them)."""
    if _tracer is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a span attribute may be: no None (the SDK warns on it)."""
    return {key: value for key, value in (attributes or {}).items() if value is not None}
