"""Affinity across documents: a service whose TrafficPolicy hashes (``lb: ring_hash`` or
``maglev``) needs a Route whose every rule gives a ``hash_policy``, and a rule's ``hash_policy``
needs its service's TrafficPolicy to hash. A sidecar's engine refuses a route and a cluster that
break either (a NACK); the control plane says so at apply time instead, at the document and field
of the file that breaks it, and refuses a delete that would. (A tcp service neither hashes nor
has a Route: ``tcp_services`` says so.)

The set judged is the store's current one with the file's documents in place of the ones they
replace.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from meshproxy.config.messages import Finding

from .base import Resource
from .keys import Key, key_of, label
from .references import Located, ParsedDocument
from .tcp_ports import is_tcp
from .traffic_policy import HASHING_LBS

_EXAMPLE = "e.g. hash_policy: [{header: x-user}]"


def check_hashing(documents: Sequence[ParsedDocument], current: Sequence[Resource]) -> list[Located]:
    in_file = {d.key: d for d in documents if d.key is not None}
    final = {key_of(r): r for r in current}
    for document in documents:
        if document.key is not None and document.model is not None:
            final[document.key] = document.model.stored()
    found: list[Located] = []
    for document in documents:
        if document.model is None or document.key is None:
            continue
        kind, namespace, service = document.key
        if is_tcp(final.get(("Service", namespace, service))):
            continue  # no Route, no hashing: its connections are not requests (tcp_services)
        if kind == "TrafficPolicy":
            route = final.get(("Route", namespace, service))
            problem = _unkeyed(final[document.key], route)
            if problem is not None and _judged_here(("Route", namespace, service), in_file):
                found.append(Located(document, Finding(("lb",), problem)))
        elif kind == "Route" and _judged_here(("TrafficPolicy", namespace, service), in_file, either=True):
            policy = final.get(("TrafficPolicy", namespace, service))
            found += [Located(document, Finding(path, message))
                      for path, message in _route_problems(final[document.key], policy)]
    return found


def _judged_here(other: Key, in_file: dict[Key, ParsedDocument], either: bool = False) -> bool:
    """A TrafficPolicy's problem with a valid Route of the same file is said once, on the Route
    (``either=False``); nothing is said against a document of the file that is invalid itself
    (``either=True``: its own errors come first)."""
    if other not in in_file:
        return True
    return (in_file[other].model is not None) == either


def _unkeyed(policy: Resource, route: Resource | None) -> str | None:
    """What a hashing TrafficPolicy lacks (a Route keying each rule), or what one that does not
    hash leaves unread (a Route's hash_policy)."""
    lb = policy["lb"]
    if lb not in HASHING_LBS:
        keyed = [f"rules[{i}]" for i, rule in enumerate(route["rules"] if route else ()) if rule.get("hash_policy")]
        if route is None or not keyed:
            return None
        return (f"Route {route['namespace']}/{route['service']} keys {', '.join(keyed)} by hash_policy, which "
                f"needs lb ring_hash or maglev; found {lb}")
    where = f"{policy['service']}.{policy['namespace']}"
    if route is None:
        return (f"{lb} needs a hash key for every call: a Route for {where} whose every rule has a "
                f"hash_policy ({_EXAMPLE}); there is no Route for it")
    # A rule that answers itself (redirect, direct_response) makes no call to key.
    bare = [f"rules[{i}]" for i, rule in enumerate(route["rules"]) if rule["to"] and not rule.get("hash_policy")]
    if bare:
        return (f"{lb} needs a hash key for every call; {', '.join(bare)} of Route "
                f"{route['namespace']}/{route['service']} {'has' if len(bare) == 1 else 'have'} no hash_policy")
    return None


def _route_problems(route: Resource, policy: Resource | None) -> Iterator[tuple[tuple[str | int, ...], str]]:
    lb = policy["lb"] if policy is not None else None
    hashing = lb in HASHING_LBS
    named = f"TrafficPolicy {route['namespace']}/{route['service']}"
    for i, rule in enumerate(route["rules"]):
        if rule.get("hash_policy") and not hashing:
            has = f"{named} has lb {lb}" if policy is not None else f"there is no {named}"
            yield (("rules", i, "hash_policy"),
                   f"applies to a service whose TrafficPolicy has lb ring_hash or maglev; {has}")
        elif hashing and rule["to"] and not rule.get("hash_policy"):
            yield ("rules", i), f"needs a hash_policy: {named} balances by {lb}, which needs a hash key ({_EXAMPLE})"


# === Deleting ===


def hashing_dependents(key: Key, resources: Sequence[Resource]) -> list[str]:
    """Why deleting ``key`` would leave a service's affinity broken: the resources it keeps whole."""
    kind, namespace, service = key
    by_key = {key_of(r): r for r in resources}
    if kind == "Route":
        policy = by_key.get(("TrafficPolicy", namespace, service))
        if policy is not None and policy["lb"] in HASHING_LBS:
            return [f"{label(key_of(policy))} (lb {policy['lb']} needs its hash_policy)"]
    if kind == "TrafficPolicy" and by_key.get(key, {}).get("lb") in HASHING_LBS:
        route = by_key.get(("Route", namespace, service))
        if route is not None and any(rule.get("hash_policy") for rule in route["rules"]):
            return [f"{label(key_of(route))} (its hash_policy needs lb ring_hash or maglev)"]
    return []
