"""The names resources use: a service, a namespace or a version is a DNS label, since it ends
up in host names (``orders.shop``), SPIFFE IDs and cluster names; a reference to a service is
``name`` (same namespace) or ``name.namespace``; the trust domain is a SPIFFE trust domain.
"""

from __future__ import annotations

import re
from typing import Annotated

from meshproxy.config.messages import invalid, show
from pydantic import AfterValidator

_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?\Z")
_LABEL_RULE = "lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"
_TRUST_DOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9._]*[a-z0-9])?\Z")


def is_label(value: str) -> bool:
    return len(value) <= 63 and _LABEL.match(value) is not None


def _label(value: str) -> str:
    if len(value) > 63 and _LABEL.match(value):
        raise invalid(f"{show(value)} is too long ({len(value)} characters); a name has at most 63")
    if not is_label(value):
        raise invalid(f"{show(value)} is not a valid name; expected a DNS label: {_LABEL_RULE}")
    return value


def _service_ref(value: str) -> str:
    parts = value.split(".")
    if len(parts) > 2 or not all(is_label(p) for p in parts):
        raise invalid(
            f"{show(value)} is not a valid service reference; expected a service name (payments, same "
            f"namespace) or name.namespace (payments.billing), each a DNS label: {_LABEL_RULE}"
        )
    return value


def _trust_domain(value: str) -> str:
    if len(value) > 255 or not _TRUST_DOMAIN.match(value):
        raise invalid(
            f"{show(value)} is not a valid trust domain; expected lowercase letters, digits, '.', '-' "
            "and '_', e.g. mesh.local"
        )
    return value


Label = Annotated[str, AfterValidator(_label)]
"""A service, namespace or version name."""
ServiceRef = Annotated[str, AfterValidator(_service_ref)]
"""``payments`` (the referring document's namespace) or ``payments.billing``."""
TrustDomain = Annotated[str, AfterValidator(_trust_domain)]


def split_ref(ref: str, namespace: str) -> tuple[str, str]:
    """``(service, namespace)`` of a reference written in a document of ``namespace``."""
    name, _, other = ref.partition(".")
    return name, other or namespace
