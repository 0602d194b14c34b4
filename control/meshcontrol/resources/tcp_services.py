"""What a ``tcp`` Service asks of the documents around it, judged at apply time rather than left
to a sidecar's NACK: a port of its own (``port`` and ``port_offset`` unique in the mesh), and an
AccessPolicy that authorizes by identity only (a connection has no path, method or headers to
match), whichever of the two documents changes. Then :func:`placed` gives each tcp Service
without a port its ``port_offset`` (``tcp_ports``), kept from the store when it had one.

The set judged is the store's current one with the file's documents in place of the ones they
replace, as in ``affinity``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from meshproxy.config.messages import Finding

from .base import Resource
from .keys import Key, key_of, label
from .models import AccessPolicy, Service
from .references import Located, ParsedDocument
from .tcp_ports import is_tcp, offsets_for, unplaced

# The fields of an authorization rule that only an HTTP request has.
HTTP_FIELDS = ("paths", "methods", "headers", "not_paths", "not_methods", "not_headers")
_BY_IDENTITY = "authorize them by services, namespaces or identities (and their not_ forms)"


def check_tcp_services(documents: Sequence[ParsedDocument], current: Sequence[Resource]) -> list[Located]:
    valid = [d for d in documents if d.key is not None and d.model is not None]
    final = {key_of(r): r for r in current}
    final.update({d.key: _kept(d.model.stored(), final.get(d.key))
                  for d in documents if d.key is not None and d.model is not None})
    return _ports(valid, final) + _policies(valid, final)


def placed(stored: Sequence[Resource], current: Sequence[Resource]) -> list[Resource]:
    """The file's stored documents with each tcp Service's ``port_offset`` kept or given, and
    after them the store's tcp Services that had none kept yet (stored before offsets were),
    given theirs too: an apply stores every offset it relies on."""
    before = {key_of(r): r for r in current}
    documents = [_kept(d, before.get(key_of(d))) for d in stored]
    final = {**before, **{key_of(d): d for d in documents}}
    # The store's own first (in its order: namespace, name), as World reads them until stored.
    older = [key for key, r in before.items() if unplaced(r) and key not in {key_of(d) for d in documents}]
    offsets = offsets_for(final.values(), first=[(name, namespace) for _, namespace, name in older])

    def given(resource: Resource) -> Resource:
        offset = offsets.get((resource.get("name", ""), resource["namespace"])) if unplaced(resource) else None
        return resource if offset is None else {**resource, "port_offset": offset}

    return [given(final[key]) for key in [*(key_of(d) for d in documents), *older]]


def _kept(resource: Resource, before: Resource | None) -> Resource:
    """A tcp Service applied again without a port keeps the offset it was given."""
    if before is not None and unplaced(resource) and is_tcp(before) and before.get("port") is None \
            and before.get("port_offset") is not None:
        return {**resource, "port_offset": before["port_offset"]}
    return resource


# === Ports ===


def _ports(valid: Sequence[ParsedDocument], final: dict[Key, Resource]) -> list[Located]:
    """A port or offset held twice, said on the file's document that gives it (the holder
    named): the store's other services hold theirs first, then offsets kept without being
    written, then what the file writes, in its order."""
    by_key = {d.key: d for d in valid}
    written = [d for d in valid if isinstance(d.model, Service) and (d.model.port or d.model.port_offset)]
    order = [key for key in final if key not in by_key]
    order += [d.key for d in valid if d not in written and d.key is not None]
    order += [d.key for d in written if d.key is not None]
    holders: dict[tuple[str, int], Key] = {}
    found: list[Located] = []
    for key in order:
        resource = final[key]
        if not is_tcp(resource):
            continue
        for field in ("port", "port_offset"):
            value = resource.get(field)
            if value is None:
                continue
            holder = holders.setdefault((field, int(value)), key)
            if holder != key and key in by_key:
                found.append(Located(by_key[key], Finding((field,), _taken(field, value, holder, by_key))))
    return found


def _taken(field: str, value: int, holder: Key, by_key: dict[Key | None, ParsedDocument]) -> str:
    where = " (applied before)"
    if holder in by_key:
        document = by_key[holder]
        where = f" (documents[{document.index}], line {document.line_of((field,)) or document.line_of(())})"
    instead = "choose another" if field == "port" else "choose another, or leave port_offset out for one to be given"
    return (f"{field} {value} is {label(holder)}'s already{where}; each TCP service needs one of its own: "
            f"{instead}")


# === AccessPolicy rules on HTTP fields ===


def _policies(valid: Sequence[ParsedDocument], final: dict[Key, Resource]) -> list[Located]:
    """Said on the AccessPolicy when the file has it, else on the Service turning tcp."""
    in_file = {d.key for d in valid}
    found: list[Located] = []
    for document in valid:
        kind, namespace, name = document.key or ("", "", "")
        if isinstance(document.model, AccessPolicy) and is_tcp(final.get(("Service", namespace, name))):
            service = label(("Service", namespace, name))
            found += [Located(document, Finding(path, f"{service} has protocol tcp: its connections have no HTTP "
                                                      f"fields; {_BY_IDENTITY}"))
                      for path in _http_conditions(final[("AccessPolicy", namespace, name)])]
        elif isinstance(document.model, Service) and document.model.protocol == "tcp" \
                and ("AccessPolicy", namespace, name) not in in_file:
            policy = final.get(("AccessPolicy", namespace, name))
            paths = list(_http_conditions(policy)) if policy is not None else []
            if paths:
                fields = ", ".join(f"rules[{i}].{field}" for _, i, field in paths)
                found.append(Located(document, Finding(("protocol",), (
                    f"a tcp service's connections have no HTTP fields, but AccessPolicy {namespace}/{name} "
                    f"authorizes by them ({fields}); first change those rules to authorize by services, namespaces "
                    "or identities, or keep the protocol it has"))))
    return found


def _http_conditions(policy: Resource) -> Iterator[tuple[str, int, str]]:
    for i, rule in enumerate(policy.get("rules") or []):
        for field in HTTP_FIELDS:
            value: Any = rule.get(field)
            if value:
                yield ("rules", i, field)
