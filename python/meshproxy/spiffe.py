"""SPIFFE IDs (``spiffe://<trust-domain>/<path>``): parsing and validation as the SPIFFE ID
specification defines them, with messages that say what is wrong and what would be valid.

The rules are stricter than generic URI syntax on purpose: the spec forbids percent-encoding,
ports, userinfo, queries, fragments and dot segments, so that two peers comparing IDs as plain
strings always agree. They are the engine's (``rust/engine/src/spiffe.rs``, reached through
``_native``), so the sidecar's config, its certificates and the engine refuse the same IDs in
the same words.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _native

SCHEME_PREFIX = "spiffe://"


@dataclass(frozen=True)
class SpiffeId:
    """A valid SPIFFE ID. ``path`` is empty (the ID of the trust domain itself) or starts
    with '/'; build one with :func:`parse_spiffe_id`."""

    trust_domain: str
    path: str

    def __str__(self) -> str:
        return f"{SCHEME_PREFIX}{self.trust_domain}{self.path}"

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.split("/")[1:]) if self.path else ()

    @property
    def namespace(self) -> str | None:
        return self._kubernetes_shape()[0]

    @property
    def service_account(self) -> str | None:
        return self._kubernetes_shape()[1]

    def _kubernetes_shape(self) -> tuple[str | None, str | None]:
        """(namespace, service account) for the ``/ns/X/sa/Y`` convention, else (None, None)."""
        match self.segments:
            case ("ns", namespace, "sa", service_account):
                return namespace, service_account
        return None, None


def parse_trust_domain(text: str) -> str:
    """Validate a trust domain name; return it unchanged. Raises ValueError."""
    try:
        _native.check_trust_domain(text)
    except ValueError as problem:
        raise ValueError(f"{_shown(text)} is not a valid trust domain: {problem}") from None
    return text


def parse_spiffe_id(text: str) -> SpiffeId:
    """Parse and validate a SPIFFE ID. Raises ValueError with a one-line message naming the
    problem and what would be valid."""
    try:
        trust_domain, path = _native.parse_spiffe_id(text)
    except ValueError as problem:
        raise ValueError(f"{_shown(text)} is not a valid SPIFFE ID: {problem}") from None
    return SpiffeId(trust_domain, path)


def _shown(text: str, limit: int = 80) -> str:
    """Quoted for a message, cut short: an ID may be up to 2048 bytes."""
    return repr(text) if len(text) <= limit else repr(text[: limit - 3] + "...")
