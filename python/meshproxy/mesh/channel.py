"""How the sidecar reaches the control plane's gRPC port: TLS contexts for each stage of trust,
and one-call helpers over grpclib (asyncio; the sidecar does not load grpcio, which would cost it
~20 MiB of resident memory).

    unverified()          Bundle, before the sidecar trusts anything: the answer is checked
                          against the join token's CA pin instead
    verified(ca)          Certify with the join token: the control plane's certificate must
                          chain to the pinned CA and name the --control host
    verified(ca, cert)    the same, showing the sidecar's own certificate (renewal, ADS, Leave)
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from grpclib.client import Channel
from grpclib.const import Cardinality

Reply = TypeVar("Reply")


class Target(NamedTuple):
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Target:
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected HOST:PORT of the control plane's gRPC port, e.g. 127.0.0.1:15010, got {text!r}")
        return cls(host.strip("[]"), int(port))


def unverified() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return _http2(context)


def verified(ca_pem: str, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """Trusts ``ca_pem`` only (not the system's CAs) and checks the host name; shows the
    certificate ``cert`` (with ``key``) when given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=ca_pem)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return _http2(context)


def _http2(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])  # gRPC servers refuse a TLS connection that did not ask for h2
    return context


async def unary(target: Target, context: ssl.SSLContext, path: str, request: Any, reply_type: type[Reply], *,
                timeout: float, metadata: dict[str, str] | None = None) -> Reply:
    """One unary call on a connection of its own, closed after it. Raises grpclib's GRPCError,
    OSError (ssl.SSLError among them) or TimeoutError."""
    channel = Channel(target.host, target.port, ssl=context)
    try:
        async with channel.request(path, Cardinality.UNARY_UNARY, type(request), reply_type, timeout=timeout,
                                   metadata=metadata) as stream:
            await stream.send_message(request, end=True)
            reply = await stream.recv_message()
        if reply is None:
            raise OSError(f"{path}: the control plane closed the call without an answer")
        return reply
    finally:
        channel.close()
