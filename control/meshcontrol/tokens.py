"""Join tokens on the control plane's side: ``meshctl token create`` issues one (the store keeps
only a digest of its secret), and a sidecar's first Certify call, or an Envoy's ADS stream,
presents it. Each refusal says why, so an operator can tell a typo from an expired token.
"""

from __future__ import annotations

import hmac
import time
from datetime import datetime, timezone

from meshproxy.mesh.join_token import JoinToken, secret_digest

from .resources.names import is_label
from .store.base import Store, TokenRecord


class TokenRefused(Exception):
    """A join token that does not admit its bearer; the message says why."""


def issue(store: Store, ca_pin: str, service: str, namespace: str, ttl_s: int, now: float | None = None) -> JoinToken:
    """A new token for one service of one namespace, valid ``ttl_s`` seconds. ValueError for a
    name that is not a DNS label or a ttl that is not positive."""
    for what, name in (("service", service), ("namespace", namespace)):
        if not is_label(name):
            raise ValueError(f"{what} {name!r} is not a valid name; expected a DNS label: lowercase letters, "
                             "digits and '-', starting and ending with a letter or digit, at most 63 characters")
    if ttl_s <= 0:
        raise ValueError(f"ttl must be positive, got {ttl_s}s")
    created = int(now if now is not None else time.time())
    token = JoinToken(JoinToken.new_id(), JoinToken.new_secret(), service, namespace, ca_pin, created + ttl_s)
    store.add_token(TokenRecord(token.id, secret_digest(token.secret), service, namespace, token.expires, False, created))
    return token


def verify(store: Store, text: str, now: float) -> TokenRecord:
    """The record of the token ``text``, if it admits its bearer at ``now``; else TokenRefused."""
    try:
        token = JoinToken.decode(text)
    except ValueError as error:
        raise TokenRefused(str(error)) from None
    record = store.token(token.id)
    if record is None:
        raise TokenRefused(f"unknown join token {token.id}: this control plane did not issue it")
    # Constant time: the secret is what a guesser is after.
    if not hmac.compare_digest(record.digest, secret_digest(token.secret)):
        raise TokenRefused(f"join token {token.id}: wrong secret")
    if (token.service, token.namespace) != (record.service, record.namespace):
        raise TokenRefused(
            f"join token {token.id} was issued for service {record.service} in namespace {record.namespace}, "
            f"but says {token.service} in {token.namespace}"
        )
    if record.revoked:
        raise TokenRefused(f"join token {token.id} was revoked; make a new one with 'meshctl token create'")
    if now >= record.expires:
        raise TokenRefused(
            f"join token {token.id} expired at {format_time(record.expires)} ({_ago(now - record.expires)} ago); "
            "make a new one with 'meshctl token create'"
        )
    return record


def format_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
