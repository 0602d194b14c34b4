"""Who is calling the control plane's gRPC endpoint: a sidecar proves it with the certificate
this CA issued it (mutual TLS), or, before it has one (and an Envoy, always), with its join
token in the ``authorization: Bearer <token>`` metadata. Either way the answer is one service
of one namespace; refusals are gRPC errors whose message says what was wrong.

The TLS layer asks for a client certificate but does not require one (``CERT_OPTIONAL``) and
verifies any it gets against the CA; the certificate is checked here again (issuer, validity,
exactly one SPIFFE ID), so nothing depends on how the TLS layer was configured.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from . import tokens
from .ca import CaError, CertificateAuthority
from .store.base import Store


@dataclass(frozen=True, slots=True)
class Caller:
    service: str
    namespace: str
    via: str
    """"certificate" or "token"."""
    spiffe_id: str = ""
    """The certificate's SPIFFE ID (empty for a token)."""


class Authenticator:
    def __init__(self, ca: CertificateAuthority, store: Store, trust_domain: Callable[[], str]) -> None:
        self.ca = ca
        self.store = store
        self.trust_domain = trust_domain

    def caller(self, stream: Stream) -> Caller:  # type: ignore[type-arg]
        """The caller's identity; GRPCError UNAUTHENTICATED when it proves none."""
        certificate = peer_certificate(stream)
        if certificate is not None:
            try:
                identity = self.ca.verify_client(certificate)
            except CaError as error:
                raise GRPCError(Status.UNAUTHENTICATED, str(error)) from None
            namespace, service = _ns_sa(identity)
            if namespace is None or service is None:
                raise GRPCError(Status.UNAUTHENTICATED, f"the client certificate's SPIFFE ID {identity} is not of the "
                                "form spiffe://<trust-domain>/ns/<namespace>/sa/<service>")
            return Caller(service, namespace, "certificate", identity)
        token = bearer_token(stream)
        if token is None:
            raise GRPCError(Status.UNAUTHENTICATED, "no client certificate and no join token: send the token from "
                            "'meshctl token create' as metadata 'authorization: Bearer <token>', or connect with "
                            "the certificate this control plane issued")
        try:
            record = tokens.verify(self.store, token, time.time())
        except tokens.TokenRefused as error:
            raise GRPCError(Status.UNAUTHENTICATED, str(error)) from None
        return Caller(record.service, record.namespace, "token")

    def check_current(self, caller: Caller, service: str, namespace: str, what: str) -> None:
        """PERMISSION_DENIED unless ``caller`` is (service, namespace) in the current trust domain."""
        if (caller.service, caller.namespace) != (service, namespace):
            proof = f"its certificate ({caller.spiffe_id})" if caller.via == "certificate" else "its join token"
            raise GRPCError(Status.PERMISSION_DENIED, f"{what} says service {service!r} in namespace {namespace!r}, "
                            f"but the caller proved it is service {caller.service!r} in namespace "
                            f"{caller.namespace!r} with {proof}")
        if caller.via == "certificate":
            expected = f"spiffe://{self.trust_domain()}/ns/{namespace}/sa/{service}"
            if caller.spiffe_id != expected:
                raise GRPCError(Status.PERMISSION_DENIED, f"the client certificate names {caller.spiffe_id}, but this "
                                f"mesh's trust domain expects {expected}; get a new certificate (Certify)")


def peer_certificate(stream: Stream) -> bytes | None:  # type: ignore[type-arg]
    """The DER client certificate of the stream's TLS connection, if the client sent one."""
    # grpclib's Peer.cert() gives the decoded dict, not the bytes cryptography wants.
    transport = getattr(stream.peer, "_transport", None)
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return bytes(der) if der else None


def bearer_token(stream: Stream) -> str | None:  # type: ignore[type-arg]
    value = stream.metadata.get("authorization") if stream.metadata is not None else None
    if not isinstance(value, str):
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _ns_sa(identity: str) -> tuple[str | None, str | None]:
    parts = identity.removeprefix("spiffe://").split("/")
    if len(parts) == 5 and parts[1] == "ns" and parts[3] == "sa":
        return parts[2], parts[4]
    return None, None
