"""A real gRPC server and client for the tests (grpcio), without generated code: the service is
written with grpc's generic handlers and messages are raw bytes.

Service ``test.Echo``:
- ``Echo`` (unary) answers the request; ``fail:<text>`` aborts with INVALID_ARGUMENT and
  ``<text>`` as the message; ``sleep:<ms>`` sleeps that long first; ``flaky:<key>`` aborts
  with UNAVAILABLE before any message (a trailers-only response) the first time a key is seen.
- ``Count`` (server streaming) answers ``n`` messages ``0``, ``1``, ... for a request ``n``;
  ``every:<ms>`` answers a message every ``<ms>`` until the call ends (at most ``STREAM_LIMIT``
  seconds; ``every:<ms>:<n>``, ``n`` messages), and counts those calls in ``streams_ended``
  once they end.
- ``Join`` (client streaming) answers the requests joined with ``,``.
- ``Chat`` (bidi) answers each request with ``re:<request>`` as it comes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

SERVICE = "test.Echo"
# How long an endless stream (``every:<ms>``) goes on at most: a test that fails never hangs.
STREAM_LIMIT = 20.0


def _raw(data: bytes) -> bytes:
    return data


class EchoApp:
    """The server, on an ephemeral loopback port; ``calls`` counts calls by method."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.streams_ended = 0
        self._seen: set[bytes] = set()
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(self._echo, _raw, _raw),
            "Count": grpc.unary_stream_rpc_method_handler(self._count, _raw, _raw),
            "Join": grpc.stream_unary_rpc_method_handler(self._join, _raw, _raw),
            "Chat": grpc.stream_stream_rpc_method_handler(self._chat, _raw, _raw),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None).wait()

    def _count_call(self, method: str) -> None:
        with self._lock:
            self.calls[method] = self.calls.get(method, 0) + 1

    def _echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._count_call("Echo")
        if request.startswith(b"fail:"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, request[5:].decode())
        if request.startswith(b"sleep:"):
            time.sleep(int(request[6:]) / 1000)
        if request.startswith(b"flaky:"):
            with self._lock:
                first = request not in self._seen
                self._seen.add(request)
            if first:
                context.abort(grpc.StatusCode.UNAVAILABLE, "not yet")
        return request

    def _count(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self._count_call("Count")
        if request.startswith(b"every:"):
            interval, _, n = request[6:].partition(b":")
            # Called by grpc once the call has ended, however it ended.
            context.add_callback(self._stream_ended)
            yield from self._stream(int(interval) / 1000, int(n) if n else None, context)
            return
        for i in range(int(request)):
            yield str(i).encode()

    def _stream(self, interval: float, n: int | None, context: grpc.ServicerContext) -> Iterator[bytes]:
        ends = time.monotonic() + STREAM_LIMIT
        i = 0
        while context.is_active() and time.monotonic() < ends and (n is None or i < n):
            yield str(i).encode()
            i += 1
            time.sleep(interval)

    def _stream_ended(self) -> None:
        with self._lock:
            self.streams_ended += 1

    def _join(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        self._count_call("Join")
        return b",".join(requests)

    def _chat(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        self._count_call("Chat")
        for request in requests:
            yield b"re:" + request


class EchoClient:
    """A channel to ``address`` (a sidecar's listener), calling with ``authority`` as the
    service the sidecar routes by."""

    def __init__(self, address: str, authority: str) -> None:
        self.channel = grpc.insecure_channel(address, options=[("grpc.default_authority", authority)])
        self.echo = self.channel.unary_unary(f"/{SERVICE}/Echo", _raw, _raw)
        self.count = self.channel.unary_stream(f"/{SERVICE}/Count", _raw, _raw)
        self.join = self.channel.stream_unary(f"/{SERVICE}/Join", _raw, _raw)
        self.chat = self.channel.stream_stream(f"/{SERVICE}/Chat", _raw, _raw)

    def __enter__(self) -> EchoClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.channel.close()


def error_of(call: Any) -> grpc.RpcError:
    """The error a call raised (it must raise one)."""
    try:
        call()
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded")
