"""An AccessPolicy as Envoy RBAC http filters, in the one shape the meshproxy sidecar reads back
into its ``authorization`` rules (the contract's "RBAC shape"): a DENY filter
``<service>.<namespace>-deny`` holding the deny rules, then an ALLOW filter
``<service>.<namespace>`` holding the allow rules; each rule
one policy named by the rule, with exactly one Permission and one Principal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2
from google.protobuf import any_pb2
from meshproxy.mesh.names import spiffe_id

RBAC_FILTER = "envoy.filters.http.rbac"

Rule = Mapping[str, Any]


def rbac_filters(policy: Mapping[str, Any] | None, trust_domain: str) -> list[hcm_pb2.HttpFilter]:
    """The RBAC filters of an AccessPolicy (none without one, or for an action with no rules)."""
    if policy is None:
        return []
    namespace = policy.get("namespace", "default")
    dry_run = bool(policy.get("dry_run", False))
    filters = []
    # Named after the AccessPolicy: the sidecar names its authorization policy after the
    # filter, and a denial's 403 says which policy refused.
    named = f"{policy['service']}.{namespace}"
    for name, action, envoy_action in ((f"{named}-deny", "deny", rbac_pb2.RBAC.DENY),
                                       (named, "allow", rbac_pb2.RBAC.ALLOW)):
        rules = [rule for rule in policy.get("rules", ()) if rule.get("action") == action]
        if not rules:
            continue
        rbac = rbac_pb2.RBAC(action=envoy_action)
        for index, rule in enumerate(rules):
            rbac.policies[rule.get("name") or f"{action}-{index}"].CopyFrom(_policy(rule, namespace, trust_domain))
        # A dry run is Envoy's shadow: evaluated and counted, never enforced.
        config = rbac_filter_pb2.RBAC(shadow_rules=rbac) if dry_run else rbac_filter_pb2.RBAC(rules=rbac)
        typed = any_pb2.Any(type_url="type.googleapis.com/" + config.DESCRIPTOR.full_name,
                            value=config.SerializeToString(deterministic=True))
        filters.append(hcm_pb2.HttpFilter(name=name, typed_config=typed))
    return filters


def _policy(rule: Rule, namespace: str, trust_domain: str) -> rbac_pb2.Policy:
    return rbac_pb2.Policy(permissions=[_permission(rule)], principals=[_principal(rule, namespace, trust_domain)])


# === permissions: what the request looks like ===


def _permission(rule: Rule) -> rbac_pb2.Permission:
    conditions: list[rbac_pb2.Permission] = []
    if rule.get("methods"):
        conditions.append(_any_of_permissions(_method(m) for m in rule["methods"]))
    if rule.get("paths"):
        conditions.append(_any_of_permissions(_path(p) for p in rule["paths"]))
    for name, match in (rule.get("headers") or {}).items():
        conditions.append(rbac_pb2.Permission(header=header_matcher(name, match)))
    if rule.get("not_methods"):
        conditions.append(rbac_pb2.Permission(not_rule=_any_of_permissions(_method(m) for m in rule["not_methods"])))
    if rule.get("not_paths"):
        conditions.append(rbac_pb2.Permission(not_rule=_any_of_permissions(_path(p) for p in rule["not_paths"])))
    if rule.get("not_headers"):
        headers = (rbac_pb2.Permission(header=header_matcher(n, m)) for n, m in rule["not_headers"].items())
        conditions.append(rbac_pb2.Permission(not_rule=_any_of_permissions(headers)))
    if not conditions:
        return rbac_pb2.Permission(any=True)
    return rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=conditions))


def _any_of_permissions(permissions: Any) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=list(permissions)))


def _method(method: str) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(header=route_components_pb2.HeaderMatcher(
        name=":method", string_match=string_pb2.StringMatcher(exact=method)))


def _path(path: str) -> rbac_pb2.Permission:
    matcher = (string_pb2.StringMatcher(prefix=path[:-1]) if path.endswith("*")
               else string_pb2.StringMatcher(exact=path))
    return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=matcher))


def header_matcher(name: str, match: Any) -> route_components_pb2.HeaderMatcher:
    """A sidecar header match (``{exact}``, ``{present}``, ``{regex}``, or a bare string for
    exact) as Envoy's HeaderMatcher; shared with route matches."""
    name = name.lower()
    if isinstance(match, str):
        match = {"exact": match}
    if match.get("exact") is not None:
        return route_components_pb2.HeaderMatcher(name=name, string_match=string_pb2.StringMatcher(exact=match["exact"]))
    if match.get("present") is not None:
        return route_components_pb2.HeaderMatcher(name=name, present_match=bool(match["present"]))
    if match.get("regex") is not None:
        return route_components_pb2.HeaderMatcher(
            name=name, string_match=string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match["regex"])))
    raise ValueError(f"header match for {name!r} needs one of exact, present, regex; got {dict(match)}")


# === principals: who the peer is ===


def _principal(rule: Rule, namespace: str, trust_domain: str) -> rbac_pb2.Principal:
    identities = _identities(rule.get("identities"), rule.get("services"), namespace, trust_domain)
    not_identities = _identities(rule.get("not_identities"), rule.get("not_services"), namespace, trust_domain)
    conditions: list[rbac_pb2.Principal] = []
    if identities:
        conditions.append(_any_of_principals(_identity(i) for i in identities))
    if rule.get("namespaces"):
        conditions.append(_any_of_principals(_namespace(n, trust_domain) for n in rule["namespaces"]))
    if not_identities:
        conditions.append(rbac_pb2.Principal(not_id=_any_of_principals(_identity(i) for i in not_identities)))
    if rule.get("not_namespaces"):
        conditions.append(rbac_pb2.Principal(
            not_id=_any_of_principals(_namespace(n, trust_domain) for n in rule["not_namespaces"])))
    if not conditions:
        return rbac_pb2.Principal(any=True)
    return rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=conditions))


def _identities(identities: Sequence[str] | None, services: Sequence[str] | None, namespace: str,
                trust_domain: str) -> list[str]:
    """Identities as written, then the services' (``frontend`` = same namespace,
    ``frontend.other`` = namespace other)."""
    found = list(identities or ())
    for service in services or ():
        name, _, other = service.partition(".")
        found.append(spiffe_id(trust_domain, other or namespace, name))
    return found


def _any_of_principals(principals: Any) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=list(principals)))


def _identity(identity: str) -> rbac_pb2.Principal:
    if identity == "*":
        matcher = string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+"))
    elif identity.endswith("*"):
        matcher = string_pb2.StringMatcher(prefix=identity[:-1])
    else:
        matcher = string_pb2.StringMatcher(exact=identity)
    return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(principal_name=matcher))


def _namespace(namespace: str, trust_domain: str) -> rbac_pb2.Principal:
    prefix = f"spiffe://{trust_domain}/ns/{namespace}/"
    return rbac_pb2.Principal(authenticated=rbac_pb2.Principal.Authenticated(
        principal_name=string_pb2.StringMatcher(prefix=prefix)))
