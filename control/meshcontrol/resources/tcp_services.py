"""What a ``tcp`` Service asks of the documents around it, judged at apply time rather than left
to a sidecar's NACK or to being ignored: a port of its own (``port`` and ``port_offset`` unique
in the mesh); an AccessPolicy that authorizes by identity only (a connection has no path,
method or headers to match), a TrafficPolicy that checks by connecting (``health_check.tcp``) and
does not hash, and no Route (its connections go to the service as a whole), whichever of the
documents changes. Then :func:`placed` gives each tcp Service without a port its
``port_offset`` (``tcp_ports``), kept from the store when it had one.

The set judged is the store's current one with the file's documents in place of the ones they
replace, as in ``affinity``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, get_args

from meshproxy.config.clusters import Lb
from meshproxy.config.errors import Path, format_path
from meshproxy.config.messages import Finding

from .base import Resource
from .keys import Key, key_of, label
from .models import Service
from .references import Located, ParsedDocument
from .tcp_ports import is_tcp, offsets_for, unplaced
from .traffic_policy import HASHING_LBS

# The fields of an authorization rule that only an HTTP request has.
HTTP_FIELDS = ("paths", "methods", "headers", "not_paths", "not_methods", "not_headers")
_BY_IDENTITY = "authorize them by services, namespaces or identities (and their not_ forms)"
_NOT_HASHING = tuple(lb for lb in get_args(Lb) if lb not in HASHING_LBS)


def check_tcp_services(documents: Sequence[ParsedDocument], current: Sequence[Resource]) -> list[Located]:
    valid = [d for d in documents if d.key is not None and d.model is not None]
    final = {key_of(r): r for r in current}
    final.update({d.key: _kept(d.model.stored(), final.get(d.key))
                  for d in documents if d.key is not None and d.model is not None})
    return _ports(valid, final) + _http_only(valid, final)


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


# === What only an HTTP service has ===


_FIX = {
    "AccessPolicy": "first change those rules to authorize by services, namespaces or identities",
    "TrafficPolicy": "first change it to health_check: {tcp: {}} and an lb that does not hash",
    "Route": "first delete it",
}
"""What a Service turning tcp asks of each kind of document about it that asks for HTTP."""


def _http_only(valid: Sequence[ParsedDocument], final: dict[Key, Resource]) -> list[Located]:
    """An AccessPolicy on HTTP fields, a TrafficPolicy checking by requests or hashing them, or
    a Route, for a tcp service: said on that document when the file has it, else on the Service
    turning tcp."""
    in_file = {d.key for d in valid}
    found: list[Located] = []
    for document in valid:
        kind, namespace, name = document.key or ("", "", "")
        if kind in _FIX and is_tcp(final.get(("Service", namespace, name))):
            service = label(("Service", namespace, name))
            found += [Located(document, Finding(path, f"{service} has protocol tcp: {why}"))
                      for path, why in _asks_http(final[(kind, namespace, name)])]
        elif isinstance(document.model, Service) and document.model.protocol == "tcp":
            for other, fix in _FIX.items():
                resource = final.get((other, namespace, name))
                if resource is None or (other, namespace, name) in in_file:
                    continue
                paths = [format_path(path) for path, _ in _asks_http(resource)]
                if paths:
                    fields = f" ({', '.join(paths)})" if any(paths) else ""  # a Route: the whole of it
                    found.append(Located(document, Finding(("protocol",), (
                        f"a tcp service's connections carry no HTTP requests, but {other} {namespace}/{name} asks "
                        f"for them{fields}; {fix}, or keep the protocol it has"))))
    return found


def _asks_http(resource: Resource) -> Iterator[tuple[Path, str]]:
    """Where a document about a service asks for what only an HTTP service has, and why a tcp
    service has not."""
    if resource["kind"] == "Route":
        yield (), ("its callers' connections go to the service as a whole, with no request to match or send to "
                   "a version; delete this Route")
    elif resource["kind"] == "TrafficPolicy":
        check: Any = resource.get("health_check") or {}
        for kind in ("http", "grpc"):
            if check.get(kind) is not None:
                yield ("health_check", kind), ("its instances are checked by connecting to them; use "
                                               "health_check: {tcp: {}}")
        if resource.get("lb") in HASHING_LBS:
            yield ("lb",), f"its connections carry no request to hash; expected one of {', '.join(_NOT_HASHING)}"
    else:
        for i, rule in enumerate(resource.get("rules") or []):
            yield from ((("rules", i, field), f"its connections have no HTTP fields; {_BY_IDENTITY}")
                        for field in HTTP_FIELDS if rule.get(field))
