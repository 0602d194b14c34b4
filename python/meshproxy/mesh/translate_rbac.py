"""Envoy RBAC http filters -> the sidecar's ``authorization`` policies.

The control plane writes an AccessPolicy as the RBAC filters of the contract (DENY then ALLOW;
one RBAC policy per rule; ``shadow_rules`` for a dry run), and this reads exactly that shape back
into sidecar rules. Anything else is refused with a message naming the part that has no sidecar
equivalent: a NACK the operator sees in ``meshctl status``, rather than a policy enforced with
a different meaning.

One RBAC filter becomes one sidecar policy of the filter's name; the sidecar's semantics (deny
rules win; once any enforced allow rule exists, a request matching none is denied) are those of
an Envoy DENY filter followed by an ALLOW filter.
"""

from __future__ import annotations

import re
from typing import Any

from .translate_base import Refused
from .translate_routes import header_match, methods_of, string_of
from .xds_messages import is_set
from .xds_pb2 import RBAC, Permission, Policy, Principal, RbacFilter

_ACTIONS = {RBAC.ALLOW: "allow", RBAC.DENY: "deny"}


def authorization_policy(rbac: RbacFilter, name: str, trust_domain: str, where: str) -> dict[str, Any] | None:
    """The sidecar policy of one RBAC filter; None for a filter with no rules (which allows
    every request, as it does in Envoy)."""
    for unsupported in ("matcher", "shadow_matcher"):
        if is_set(rbac, unsupported):
            raise Refused(f"{where}: '{unsupported}' has no sidecar equivalent; use rules (RBAC policies)")
    if rbac.HasField("rules") and rbac.HasField("shadow_rules"):
        raise Refused(f"{where}: both rules and shadow_rules are set; a policy is either enforced or a dry run")
    dry_run = rbac.HasField("shadow_rules")
    rules = rbac.shadow_rules if dry_run else rbac.rules
    if not dry_run and not rbac.HasField("rules"):
        return None
    action = _ACTIONS.get(rules.action)
    if action is None:
        raise Refused(f"{where}: action {RBAC.Action.Name(rules.action)} has no sidecar equivalent; "
                      "expected ALLOW or DENY")
    if not rules.policies:
        # An ALLOW filter without policies denies every request; the control plane leaves a
        # filter out instead of sending it empty.
        raise Refused(f"{where}: an RBAC filter with no policies; expected at least one")
    return {
        "name": name,
        "dry_run": dry_run,
        # A map on the wire: sorted, so that one policy always translates to one document.
        "rules": [_rule(key, rules.policies[key], action, trust_domain, f"{where}: policy '{key}'")
                  for key in sorted(rules.policies)],
    }


def _rule(name: str, policy: Policy, action: str, trust_domain: str, where: str) -> dict[str, Any]:
    for unsupported in ("condition", "checked_condition", "cel_config"):
        if is_set(policy, unsupported):
            raise Refused(f"{where}: '{unsupported}' has no sidecar equivalent")
    if len(policy.permissions) != 1 or len(policy.principals) != 1:
        raise Refused(f"{where}: expected exactly one permission and one principal (and_rules / and_ids of the "
                      f"conditions), found {len(policy.permissions)} and {len(policy.principals)}")
    rule: dict[str, Any] = {"name": name, "action": action}
    _add_conditions(rule, _permission_conditions(policy.permissions[0], f"{where}: permissions[0]"), where)
    _add_conditions(rule, _principal_conditions(policy.principals[0], trust_domain, f"{where}: principals[0]"), where)
    return rule


def _add_conditions(rule: dict[str, Any], conditions: list[tuple[str, Any]], where: str) -> None:
    for key, value in conditions:
        if key in ("headers", "not_headers") and isinstance(value, dict):
            headers = rule.setdefault(key, {})
            for header, match in value.items():
                if header in headers:
                    raise Refused(f"{where}: header '{header}' is matched twice")
                headers[header] = match
        elif key in rule:
            raise Refused(f"{where}: two conditions on {key}; a sidecar rule has one list per condition")
        else:
            rule[key] = value


# === Permissions: what the request is ===


def _permission_conditions(permission: Permission, where: str) -> list[tuple[str, Any]]:
    kind = permission.WhichOneof("rule")
    if kind == "any":
        return []
    items = list(permission.and_rules.rules) if kind == "and_rules" else [permission]
    return [_permission_condition(item, f"{where}: and_rules[{i}]" if kind == "and_rules" else where)
            for i, item in enumerate(items)]


def _permission_condition(item: Permission, where: str) -> tuple[str, Any]:
    kind = item.WhichOneof("rule")
    if kind == "not_rule":
        key, value = _permission_group(item.not_rule, f"{where}: not_rule", negated=True)
        return "not_" + key, value
    return _permission_group(item, where, negated=False)


def _permission_group(item: Permission, where: str, *, negated: bool) -> tuple[str, Any]:
    """One condition: methods, paths or headers, as an or_rules list or one entry."""
    kind = item.WhichOneof("rule")
    entries = list(item.or_rules.rules) if kind == "or_rules" else [item]
    kinds = {entry.WhichOneof("rule") for entry in entries}
    if kinds == {"header"} and all(entry.header.name == ":method" for entry in entries):
        methods: list[str] = []
        for i, entry in enumerate(entries):
            methods += methods_of(entry.header, f"{where}: or_rules[{i}]")
        return "methods", methods
    if kinds == {"url_path"}:
        return "paths", [_path(entry.url_path, f"{where}: or_rules[{i}]") for i, entry in enumerate(entries)]
    if kinds == {"header"} and (negated or len(entries) == 1):
        # Headers are and-ed in a rule: a positive condition is one header per and_rules entry,
        # a negated one (none may hold) an or_rules list under not_rule.
        headers: dict[str, Any] = {}
        for i, entry in enumerate(entries):
            name = entry.header.name.lower()
            if name in headers:
                raise Refused(f"{where}: header '{name}' is matched twice")
            headers[name] = header_match(entry.header, f"{where}: or_rules[{i}]")
        return "headers", headers
    found = f"or_rules of {', '.join(sorted(k or 'nothing' for k in kinds))}" if kind == "or_rules" else kind
    raise Refused(f"{where}: {found} has no sidecar equivalent; expected methods (':method' headers), "
                  "url_path entries or header matches")


def _path(matcher: Any, where: str) -> str:
    if matcher.WhichOneof("rule") != "path":
        raise Refused(f"{where}: url_path needs a path matcher")
    kind, value = string_of(matcher.path, f"{where}: url_path")
    if kind == "exact":
        return str(value)
    if kind == "prefix":
        return f"{value}*"
    raise Refused(f"{where}: url_path {kind} has no sidecar equivalent; expected exact or prefix")


# === Principals: who the peer is ===


def _principal_conditions(principal: Principal, trust_domain: str, where: str) -> list[tuple[str, Any]]:
    kind = principal.WhichOneof("identifier")
    if kind == "any":
        return []
    items = list(principal.and_ids.ids) if kind == "and_ids" else [principal]
    conditions: list[tuple[str, Any]] = []
    for i, item in enumerate(items):
        at = f"{where}: and_ids[{i}]" if kind == "and_ids" else where
        negated = item.WhichOneof("identifier") == "not_id"
        key, value = _principal_group(item.not_id if negated else item, trust_domain,
                                      f"{at}: not_id" if negated else at)
        # Two lists of one kind (namespaces written twice): the second, as identities, means the same.
        taken = {k for k, _ in conditions}
        prefix = "not_" if negated else ""
        if key == "namespaces" and prefix + key in taken:
            key, value = "identities", [f"spiffe://{trust_domain}/ns/{ns}/*" for ns in value]
        conditions.append((prefix + key, value))
    return conditions


_NAMESPACE_PREFIX = re.compile(r"^spiffe://(?P<domain>[^/]+)/ns/(?P<namespace>[^/]+)/$")


def _principal_group(item: Principal, trust_domain: str, where: str) -> tuple[str, list[str]]:
    """identities or namespaces, from an or_ids list of authenticated principal names or one."""
    kind = item.WhichOneof("identifier")
    entries = list(item.or_ids.ids) if kind == "or_ids" else [item]
    identities: list[str] = []
    namespaces: list[str | None] = []
    for i, entry in enumerate(entries):
        at = f"{where}: or_ids[{i}]" if kind == "or_ids" else where
        if entry.WhichOneof("identifier") != "authenticated":
            found = entry.WhichOneof("identifier") or "nothing"
            raise Refused(f"{at}: {found} has no sidecar equivalent; expected authenticated.principal_name")
        how, value = string_of(entry.authenticated.principal_name, f"{at}: authenticated.principal_name")
        namespace = None
        if how == "exact":
            identities.append(str(value))
        elif how == "prefix":
            identities.append(f"{value}*")
            shape = _NAMESPACE_PREFIX.match(str(value))
            namespace = shape["namespace"] if shape and shape["domain"] == trust_domain else None
        elif how == "regex" and value in (".+", ".*"):
            identities.append("*")
        else:
            raise Refused(f"{at}: principal_name {how} {value!r} has no sidecar equivalent; expected exact, "
                          "prefix, or the regex '.+' for any peer")
        namespaces.append(namespace)
    if all(namespace is not None for namespace in namespaces):
        return "namespaces", [namespace for namespace in namespaces if namespace is not None]
    return "identities", identities
