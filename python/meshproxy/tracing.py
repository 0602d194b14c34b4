"""Span export: the engine queues each finished, sampled span; one thread here drains the queue
in batches (up to 512 spans, or what came in a second), encodes each batch as an OTLP
``ExportTraceServiceRequest`` and POSTs it to the collector's ``/v1/traces`` (OTLP/HTTP,
protobuf). Python runs per batch, never per request. A batch the collector could not take for a
reason the OTLP specification calls retryable is sent again a few times (see :mod:`.export_retry`).

Imported only when a config has a ``tracing`` section: it loads the OpenTelemetry protobuf
modules, which a sidecar without tracing has no use for.
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import TypeAlias

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from . import _native
from .engine_document import TracingExport
from .export_retry import RETRY_DELAYS, retry_delay, retryable

log = logging.getLogger("meshproxy")

SpanData: TypeAlias = tuple[bytes, bytes, bytes, str, int, int, list[tuple[str, str | int]], str | None]
"""A finished span as ``Engine.drain_spans`` gives it: ``(trace_id, span_id, parent_span_id,
name, start_ns, end_ns, attributes, error_type)``."""

BATCH = 512
"""Most spans in one request to the collector."""
INTERVAL = 1.0
"""Longest a span waits in the engine's queue before its batch is sent, in seconds."""
POST_TIMEOUT = 10.0
"""Seconds a collector may take to answer one batch; the batch is dropped after that."""


def traces_url(otlp_endpoint: str) -> str:
    """The URL batches are posted to: ``/v1/traces`` under a base URL (as OTLP exporters treat
    ``OTEL_EXPORTER_OTLP_ENDPOINT``), or the endpoint itself when it has a path."""
    parts = urllib.parse.urlsplit(otlp_endpoint)
    if parts.path in ("", "/"):
        return urllib.parse.urlunsplit(parts._replace(path="/v1/traces"))
    return otlp_endpoint


def encode(spans: Sequence[SpanData], service_name: str, version: str) -> bytes:
    """One OTLP export request holding ``spans``, as the resource ``service_name``."""
    resource = Resource(attributes=[_attribute("service.name", service_name)])
    scope = InstrumentationScope(name="meshproxy", version=version)
    encoded = [_span(span) for span in spans]
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(scope=scope, spans=encoded)])]
    )
    return request.SerializeToString()


def _span(data: SpanData) -> Span:
    trace_id, span_id, parent, name, start, end, attributes, error_type = data
    status = (
        Status(code=Status.STATUS_CODE_ERROR, message=error_type) if error_type is not None else Status()
    )
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        # The proxy's span covers the request as the proxy received and answered it.
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        attributes=[_attribute(key, value) for key, value in attributes],
        status=status,
    )


def _attribute(key: str, value: str | int) -> KeyValue:
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


class SpanExporter:
    """Drains the engine's finished spans and sends them to an OTLP/HTTP collector, from one
    background thread. A batch that failed for a retryable reason is sent again after 0.5, 1
    and 2 s (or when the collector's ``Retry-After`` says), counted in ``export_retries``; a
    batch the collector refuses otherwise, does not answer in time, or still cannot take after
    the retries is dropped and counted (``export_failed``); the next batch is tried all the
    same. A stopping exporter retries nothing, so it cannot hold up shutdown."""

    def __init__(self, engine: _native.Engine, target: TracingExport) -> None:
        self._engine: _native.Engine | None = engine
        self._target = target
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._exported = 0
        self._failed = 0
        self._retries = 0
        self._failing = False
        # No proxy from the environment: a sidecar's app may set HTTP_PROXY to this very
        # sidecar, and its spans must not loop through it.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._thread = threading.Thread(target=self._run, name="meshproxy-span-export", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def retarget(self, target: TracingExport) -> None:
        """Sends the next batches to another collector, or under another service name."""
        with self._lock:
            self._target = target

    def stop(self) -> None:
        """Sends what is queued (call after the engine stopped taking requests), then stops."""
        self._stopping.set()
        engine = self._engine
        if engine is not None:
            engine.wake_span_drain()
        self._thread.join()
        # The engine finishes its access log when it is dropped: hold no reference to it.
        self._engine = None

    def stats(self) -> dict[str, int]:
        """Spans the collector accepted, spans in batches that failed to reach it, and batches
        sent again."""
        with self._lock:
            return {"exported": self._exported, "export_failed": self._failed, "export_retries": self._retries}

    def _run(self) -> None:
        engine = self._engine
        if engine is None:
            return
        while not self._stopping.is_set():
            self._send(engine.drain_spans(BATCH, INTERVAL))
        # Stopping: what the last requests left in the queue, without waiting for more.
        while batch := engine.drain_spans(BATCH, 0.0):
            self._send(batch)

    def _send(self, batch: list[SpanData]) -> None:
        if not batch:
            return
        with self._lock:
            target = self._target
        body = encode(batch, target.service_name, _native.__version__)
        url = traces_url(target.otlp_endpoint)
        attempt = 0
        while True:
            error = self._post(url, body)
            if error is None:
                break
            if attempt == len(RETRY_DELAYS) or not retryable(error):
                self._dropped(batch, target, error)
                return
            retry_after = error.headers.get("Retry-After") if isinstance(error, urllib.error.HTTPError) else None
            # Woken early by stop(): the batch is given up rather than shutdown held up.
            if self._stopping.wait(retry_delay(attempt, retry_after)):
                self._dropped(batch, target, error)
                return
            attempt += 1
            with self._lock:
                self._retries += 1
        with self._lock:
            self._exported += len(batch)
            recovered = self._failing
            self._failing = False
        if recovered:
            log.info("span export to %s works again", target.otlp_endpoint)

    def _post(self, url: str, body: bytes) -> Exception | None:
        """POSTs one batch; None when the collector took it, else why not."""
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/x-protobuf"}
        )
        try:
            with self._opener.open(request, timeout=POST_TIMEOUT) as response:
                response.read()
        except urllib.error.HTTPError as error:
            # Closed here, so no connection is held while a retry waits; the answer's headers
            # (Retry-After) stay readable.
            error.close()
            return error
        except (urllib.error.URLError, OSError, ValueError) as error:
            return error
        return None

    def _dropped(self, batch: list[SpanData], target: TracingExport, error: Exception) -> None:
        with self._lock:
            self._failed += len(batch)
            first = not self._failing
            self._failing = True
        # Once per run of failures: a collector that is down would otherwise log every second.
        if first:
            log.warning("span export to %s failed, dropping spans until it works: %s", target.otlp_endpoint, error)
