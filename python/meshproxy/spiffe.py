"""SPIFFE IDs (``spiffe://<trust-domain>/<path>``): parsing and validation as the SPIFFE ID
specification defines them, with messages that say what is wrong and what would be valid.

The rules are stricter than generic URI syntax on purpose: the spec forbids percent-encoding,
ports, userinfo, queries, fragments and dot segments, so that two peers comparing IDs as plain
strings always agree.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

SCHEME_PREFIX = "spiffe://"
MAX_ID_BYTES = 2048
# The trust domain is a URI host; 255 is the host length limit of URIs (RFC 3986 via DNS).
MAX_TRUST_DOMAIN_LENGTH = 255

TRUST_DOMAIN_CHARS = frozenset(string.ascii_lowercase + string.digits + ".-_")
PATH_SEGMENT_CHARS = frozenset(string.ascii_letters + string.digits + ".-_")
TRUST_DOMAIN_RULE = "lowercase letters a-z, digits 0-9, '.', '-' and '_'"
PATH_SEGMENT_RULE = "letters A-Z and a-z, digits 0-9, '.', '-' and '_'"


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
    problem = _trust_domain_problem(text)
    if problem is not None and text.startswith(SCHEME_PREFIX):
        problem = f"give the trust domain alone, without 'spiffe://': {text[len(SCHEME_PREFIX):]!r}"
    if problem is not None:
        raise ValueError(f"{_shown(text)} is not a valid trust domain: {problem}")
    return text


def parse_spiffe_id(text: str) -> SpiffeId:
    """Parse and validate a SPIFFE ID. Raises ValueError with a one-line message naming the
    problem and what would be valid."""
    problem = _id_problem(text)
    if problem is not None:
        raise ValueError(f"{_shown(text)} is not a valid SPIFFE ID: {problem}")
    rest = text[len(SCHEME_PREFIX):]
    slash = rest.find("/")
    if slash < 0:
        return SpiffeId(rest, "")
    return SpiffeId(rest[:slash], rest[slash:])


def _id_problem(text: str) -> str | None:
    if len(text.encode()) > MAX_ID_BYTES:
        return f"it is {len(text.encode())} bytes long; at most {MAX_ID_BYTES} are allowed"
    if not text.startswith(SCHEME_PREFIX):
        if text.lower().startswith(SCHEME_PREFIX):
            return "the scheme must be written in lowercase: 'spiffe://'"
        return ("it must start with 'spiffe://' followed by a trust domain, "
                "e.g. 'spiffe://example.org/ns/default/sa/web'")
    rest = text[len(SCHEME_PREFIX):]
    # Checked before the character rules, so a query or a port is named as such rather than
    # as a stray character.
    for mark, part in (("?", "a query"), ("#", "a fragment")):
        if mark in rest:
            return f"it must not have {part} ('{mark}...')"
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        return "it must not have userinfo ('...@') before the trust domain"
    if ":" in authority:
        return "it must not have a port (':...') after the trust domain"
    trust_domain_problem = _trust_domain_problem(authority)
    if trust_domain_problem is not None:
        return trust_domain_problem
    if slash:
        return _path_problem(path)
    return None


def _trust_domain_problem(text: str) -> str | None:
    if not text:
        return f"the trust domain is empty; it needs at least one of {TRUST_DOMAIN_RULE}"
    if len(text) > MAX_TRUST_DOMAIN_LENGTH:
        return (f"the trust domain is {len(text)} characters long; "
                f"at most {MAX_TRUST_DOMAIN_LENGTH} are allowed")
    bad = _first_not_in(text, TRUST_DOMAIN_CHARS)
    if bad is not None:
        return f"the trust domain contains {bad!r}; it may use only {TRUST_DOMAIN_RULE}"
    return None


def _path_problem(path: str) -> str | None:
    """``path`` is what follows the first '/' after the trust domain."""
    segments = path.split("/")
    for index, segment in enumerate(segments):
        if segment == "":
            if index == len(segments) - 1:
                return "the path must not end with '/'; remove the trailing '/'"
            return "the path must not have empty segments ('//'); separate segments with a single '/'"
        if segment in (".", ".."):
            return f"the path must not have '{segment}' segments; write the path out in full without them"
        bad = _first_not_in(segment, PATH_SEGMENT_CHARS)
        if bad is not None:
            return (f"the path segment {_shown(segment)} contains {bad!r}; "
                    f"path segments may use only {PATH_SEGMENT_RULE}")
    return None


def _first_not_in(text: str, allowed: frozenset[str]) -> str | None:
    return next((char for char in text if char not in allowed), None)


def _shown(text: str, limit: int = 80) -> str:
    """Quoted for a message, cut short: an ID may be up to 2048 bytes."""
    return repr(text) if len(text) <= limit else repr(text[: limit - 3] + "...")
