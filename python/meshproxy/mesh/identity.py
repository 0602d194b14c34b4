"""The sidecar's mesh identity from the control plane: joining with a token, and renewing.

Join (once, or again when the saved certificate has expired):
    1. Mesh.Bundle over TLS that verifies nothing, and the answer checked against the token's CA
       pin: a control plane whose CA is not the pinned one is refused, whatever it says.
    2. A new EC P-256 key, made here (by the keygen child; it never leaves the state folder).
    3. Mesh.Certify over TLS verified against the pinned CA (and the --control host name), with
       the token as `authorization: Bearer`, and the CSR.
    4. cert.pem, key.pem (0600), bundle.pem replaced in the state folder, each by rename.
Renew (at about half the lifetime): steps 2 to 4, proving who it is with its current
certificate (mutual TLS) instead of the token; then the engine reads the files again. Open
connections carry on; new handshakes use the new certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from . import mesh_pb2
from .channel import Target, unary, unverified, verified
from .join_token import JoinToken
from .keygen import new_key_and_csr
from .names import spiffe_id
from .pins import bundle_pins, certificate_blocks
from .state import IdentityRecord, StateDir

log = logging.getLogger("meshproxy")

BUNDLE = "/meshproxy.mesh.v1.Mesh/Bundle"
CERTIFY = "/meshproxy.mesh.v1.Mesh/Certify"
_CALL_TIMEOUT = 10.0
# Refusals the control plane means: the same request will be refused again.
_REFUSALS = {Status.UNAUTHENTICATED, Status.PERMISSION_DENIED, Status.INVALID_ARGUMENT, Status.FAILED_PRECONDITION}


class JoinRefused(Exception):
    """The control plane (or the token) says no, or is not the one the token pins: trying the
    same again will not help. The message says why and what to do."""


class Identity:
    """The certificate the sidecar holds, and the means to get the next one."""

    def __init__(self, target: Target, token: JoinToken, state: StateDir) -> None:
        self.target = target
        self.token = token
        self.state = state
        self.record = state.identity()
        self._due: asyncio.Event | None = None

    # --- joining -------------------------------------------------------------------------

    async def join(self) -> IdentityRecord:
        """A certificate for the token's service; raises JoinRefused, or OSError / TimeoutError /
        GRPCError while the control plane cannot be reached."""
        token = self.token
        if token.expires <= time.time():
            raise JoinRefused(f"the join token expired at {_when(token.expires)}; make a new one with "
                              f"'meshctl token create --service {token.service} --namespace {token.namespace}'")
        bundle = await unary(self.target, unverified(), BUNDLE, mesh_pb2.BundleRequest(), mesh_pb2.BundleResponse,
                             timeout=_CALL_TIMEOUT)
        try:
            presented = bundle_pins(bundle.bundle_pem)
        except ValueError as error:
            raise JoinRefused(f"control plane at {self.target} sent a CA bundle that does not parse: {error}") from None
        pinned = [block for block, pin in zip(certificate_blocks(bundle.bundle_pem), presented, strict=True)
                  if pin == token.ca_pin]
        if not pinned:
            raise JoinRefused(f"control plane at {self.target} presents CA {', '.join(presented) or 'none'}, the token "
                              f"pins {token.ca_pin}; refusing to trust it (is --control the control plane that made "
                              "the token?)")
        identity = spiffe_id(bundle.trust_domain, token.namespace, token.service)
        csr = await asyncio.to_thread(new_key_and_csr, self.state.next_key, identity)
        try:
            reply = await unary(self.target, verified("".join(pinned)), CERTIFY,
                                mesh_pb2.CertifyRequest(csr_pem=csr.decode()), mesh_pb2.CertifyResponse,
                                timeout=_CALL_TIMEOUT, metadata={"authorization": f"Bearer {token.encode()}"})
        except GRPCError as error:
            if error.status in _REFUSALS:
                raise JoinRefused(f"control plane at {self.target} refused the join token: {error.message}") from None
            raise
        except ssl.SSLCertVerificationError as error:
            raise JoinRefused(f"control plane at {self.target}: its TLS certificate does not verify against the "
                              f"pinned CA {token.ca_pin}: {error}") from None
        return self._keep(reply)

    async def join_until_joined(self, unreachable: Callable[[str, float], None]) -> IdentityRecord:
        """join(), again after a back-off while the control plane cannot be reached (telling
        ``unreachable`` the error and the delay); JoinRefused ends it."""
        backoff = Backoff()
        while True:
            try:
                return await self.join()
            except (OSError, TimeoutError, GRPCError) as error:
                delay = backoff.next()
                unreachable(describe(error), delay)
                await asyncio.sleep(delay)

    # --- renewing ------------------------------------------------------------------------

    async def renew(self) -> IdentityRecord:
        """A new certificate for a new key, proving who the sidecar is with its current one."""
        record = self.record
        if record is None or record.expired():
            return await self.join()
        context = verified(self.state.bundle.read_text(), self.state.cert, self.state.key)
        # Asked again: the mesh may have moved to another trust domain since the last one.
        bundle = await unary(self.target, context, BUNDLE, mesh_pb2.BundleRequest(), mesh_pb2.BundleResponse,
                             timeout=_CALL_TIMEOUT)
        identity = spiffe_id(bundle.trust_domain, self.token.namespace, self.token.service)
        csr = await asyncio.to_thread(new_key_and_csr, self.state.next_key, identity)
        reply = await unary(self.target, context, CERTIFY, mesh_pb2.CertifyRequest(csr_pem=csr.decode()),
                            mesh_pb2.CertifyResponse, timeout=_CALL_TIMEOUT)
        return self._keep(reply)

    async def keep_renewed(self, renewed: Callable[[IdentityRecord], Awaitable[None]]) -> None:
        """Renews at about half of each certificate's lifetime, for as long as it runs; a failed
        renewal is tried again after a back-off until it works (or the certificate expires, and
        the token joins again)."""
        self._due = asyncio.Event()
        while True:
            record = self.record
            assert record is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), max(0.0, record.renew_at() - time.time()))
            self._due.clear()
            backoff = Backoff(cap=max(1.0, min(60.0, (record.not_after - record.issued) / 10)))
            while True:
                try:
                    new = await self.renew()
                    break
                except JoinRefused as error:
                    delay = backoff.next()
                    log.error("certificate renewal refused: %s; retrying in %.1fs", error, delay)
                except (OSError, TimeoutError, GRPCError) as error:
                    delay = backoff.next()
                    log.warning("certificate renewal failed (%s); retrying in %.1fs (it expires at %s)",
                                describe(error), delay, _when(record.not_after))
                await asyncio.sleep(delay)
            await renewed(new)

    def renew_soon(self) -> None:
        """Renews now rather than at half-life (the mesh's trust domain changed, say); call on
        the loop keep_renewed runs on."""
        if self._due is not None:
            self._due.set()

    def _keep(self, reply: mesh_pb2.CertifyResponse) -> IdentityRecord:
        token = self.token
        if not reply.spiffe_id.endswith(f"/ns/{token.namespace}/sa/{token.service}"):
            raise JoinRefused(f"control plane at {self.target} issued a certificate for {reply.spiffe_id}, not for "
                              f"service {token.service!r} in namespace {token.namespace!r}")
        trust_domain = reply.spiffe_id.removeprefix("spiffe://").split("/", 1)[0]
        record = IdentityRecord(reply.spiffe_id, trust_domain, int(time.time()), int(reply.not_after))
        self.state.save_identity(reply.certificate_pem.encode(), reply.bundle_pem.encode(), record)
        self.record = record
        return record


class Backoff:
    """Capped exponential back-off with jitter: a fleet of sidecars that lost the control plane
    together does not come back to it in step."""

    def __init__(self, first: float = 0.5, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self._attempt = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.first * 2 ** self._attempt)
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0


def describe(error: BaseException) -> str:
    """A connection failure in a few words."""
    if isinstance(error, GRPCError):
        return f"gRPC {error.status.name}: {error.message}"
    if isinstance(error, TimeoutError):
        return "timed out"
    text = str(error) or type(error).__name__
    return text


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
