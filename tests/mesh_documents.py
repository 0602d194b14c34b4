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


def resilience(limited: str, ruled: str, namespace: str) -> str:
    """A TrafficPolicy giving ``limited`` circuit breakers of two requests, and a Route of
    ``ruled`` with one rule of each kind: a redirect (/old), a direct response (/ping), a fault
    for requests with ``x-fault`` (/chaos), a rate limit of one a second (/limited), a regex
    rewrite (/v1/...), and a retry on 5xx for the rest."""
    return f"""\
kind: TrafficPolicy
service: {limited}
namespace: {namespace}
circuit_breakers: {{max_requests: 2}}
---
kind: Route
service: {ruled}
namespace: {namespace}
rules:
  - match: {{path: /old}}
    redirect: {{path: /new, status: 308}}
  - match: {{path: /ping}}
    direct_response: {{status: 200, body: pong}}
  - match: {{path: /chaos}}
    to: [{{version: v1}}]
    fault: {{abort: {{status: 503, percent: 100, header: x-fault}}}}
  - match: {{path: /limited}}
    to: [{{version: v1}}]
    rate_limit: {{requests_per_second: 1, burst: 1}}
  - match: {{path_prefix: /v1/}}
    to: [{{version: v1}}]
    regex_rewrite: {{pattern: '^/v1/(.*)$', substitution: '/\\1'}}
  - to: [{{version: v1}}]
    retry: {{retry_on: [5xx], attempts: 2, budget: {{percent: 20, min_per_second: 10}}}}
"""
