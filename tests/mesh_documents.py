"""The YAML documents (as ``meshctl apply`` reads them) that several tests of the control plane
apply, written once: a test's mesh reads as the list of documents it joins.

    MESH = documents(service("orders", "shop", calls=["payments"]), canary_route("payments", "shop"))
"""

from __future__ import annotations

from collections.abc import Sequence

# Tests change the split by replacing this text ("weight: 90}, {version: v2, weight: 10}").
_CANARY_RULES = """\
rules:
  - match: {headers: {x-channel: beta}}
    to: [{version: v2}]
  - to: [{version: v1, weight: 90}, {version: v2, weight: 10}]
    timeout: 5s
"""

# The two services of the smallest mesh: frontend and orders in the default namespace, with
# who may call whom left to the defaults.
FRONTEND_AND_ORDERS = """\
kind: Service
name: frontend
---
kind: Service
name: orders
"""


def documents(*parts: str) -> str:
    """One stream of documents, as a file given to ``meshctl apply`` holds them."""
    return "---\n".join(parts)


def service(name: str, namespace: str | None = None, *, calls: Sequence[str] | None = None,
            protocol: str | None = None) -> str:
    """A Service document with only the fields given: ``calls=[]`` (calls nothing) and no
    ``calls`` (the default) mean different things."""
    lines = ["kind: Service", f"name: {name}"]
    if namespace is not None:
        lines.append(f"namespace: {namespace}")
    if calls is not None:
        lines.append(f"calls: [{', '.join(calls)}]")
    if protocol is not None:
        lines.append(f"protocol: {protocol}")
    return "\n".join(lines) + "\n"


def canary_route(service: str, namespace: str) -> str:
    """The canary Route: requests with ``x-channel: beta`` go to v2; the rest 90% to v1 and 10%
    to v2, with a 5 s timeout."""
    return f"kind: Route\nservice: {service}\nnamespace: {namespace}\n{_CANARY_RULES}"
