"""A real OTLP/HTTP trace receiver for tests: an HTTP server on loopback that parses each POST
to ``/v1/traces`` as an ``ExportTraceServiceRequest`` (the opentelemetry-proto definitions) and
keeps the spans, with their resource's attributes, for the test to read. It can be told to refuse
the next requests first (``refuse``), answering each with a given status and headers, as a
collector that is overloaded or unwell does."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span


@dataclass
class ReceivedSpan:
    span: Span
    resource: dict[str, Any]

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_span_id(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def attributes(self) -> dict[str, Any]:
        return {kv.key: _value(kv.value) for kv in self.span.attributes}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind is not None else None


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.content_types: list[str] = []
        # Each POST to /v1/traces, in order: the status it was answered with.
        self.answered: list[int] = []
        self._arrivals: list[float] = []
        self._refusals: list[tuple[int, dict[str, str]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                with receiver._lock:
                    refusal = receiver._refusals.pop(0) if receiver._refusals else None
                    receiver.answered.append(refusal[0] if refusal is not None else 200)
                    receiver._arrivals.append(time.monotonic())
                if refusal is not None:
                    status, headers = refusal
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest.FromString(body)
                received = [
                    ReceivedSpan(span, {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes})
                    for resource_spans in request.resource_spans
                    for scope_spans in resource_spans.scope_spans
                    for span in scope_spans.spans
                ]
                with receiver._lock:
                    receiver.spans.extend(received)
                    receiver.requests += 1
                    receiver.content_types.append(self.headers.get("content-type", ""))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def received(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def refuse(self, status: int, headers: dict[str, str] | None = None) -> None:
        """Answers the next POST not yet told how with ``status`` (and ``headers``), keeping no
        span of it; once the refusals are used up, POSTs are accepted again."""
        with self._lock:
            self._refusals.append((status, headers or {}))

    def statuses(self) -> list[int]:
        """The status each POST to /v1/traces was answered with, in order."""
        with self._lock:
            return list(self.answered)

    def arrivals(self) -> list[float]:
        """When each POST to /v1/traces arrived (``time.monotonic``), in order."""
        with self._lock:
            return list(self._arrivals)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextlib.contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
