"""What documents say about each other: a Route, an AccessPolicy, a TrafficPolicy or a
Service's `calls` names a Service that exists (in the store or in the same file), one file defines each resource once,
and a Service still named by others is not deleted.

A Route may name a version no instance runs yet: versions come and go with instances, and
until one registers, that share of the requests gets 503 ``no_healthy_endpoint``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from meshproxy.config.errors import Path
from meshproxy.config.messages import Finding, show

from .keys import Key, key_of, label
from .models import AccessPolicy, Document, Resource, Service
from .names import is_label, split_ref


# The kinds whose name is the service they are about.
_ABOUT_A_SERVICE = ("Route", "AccessPolicy", "TrafficPolicy")


@dataclass(frozen=True)
class ParsedDocument:
    """One document of a file, as far as it could be read."""

    index: int
    key: Key | None
    """None when its kind or name cannot be read."""
    line_of: Callable[[Path], int | None]
    model: Document | None
    """None when it is invalid."""


@dataclass(frozen=True)
class Located:
    document: ParsedDocument
    finding: Finding


def check_references(documents: Sequence[ParsedDocument], current: Sequence[Resource]) -> list[Located]:
    return _duplicates(documents) + _unknown_services(documents, current)


def _duplicates(documents: Sequence[ParsedDocument]) -> list[Located]:
    found: list[Located] = []
    first: dict[Key, ParsedDocument] = {}
    for document in documents:
        if document.key is None:
            continue
        if document.key in first:
            earlier = first[document.key]
            message = f"duplicate document; already defined by documents[{earlier.index}] on line {earlier.line_of(())}"
            found.append(Located(document, Finding((), message)))
        else:
            first[document.key] = document
    return found


def _unknown_services(documents: Sequence[ParsedDocument], current: Sequence[Resource]) -> list[Located]:
    # A Service document counts as defined even when it has errors of its own: those are
    # reported once, on it, not again on everything naming it.
    known = {(ns, name) for kind, ns, name in map(key_of, current) if kind == "Service"}
    known |= {(ns, name) for kind, ns, name in (d.key for d in documents if d.key) if kind == "Service"}
    found: list[Located] = []
    for document in documents:
        for path, (name, namespace) in _named_services(document):
            if (namespace, name) not in known:
                found.append(Located(document, Finding(path, _unknown(name, namespace, known))))
    return found


def _named_services(document: ParsedDocument) -> Iterator[tuple[Path, tuple[str, str]]]:
    """Every service a document names, with where it names it. The service a Route or an
    AccessPolicy is about is read from its key, so it is checked even when the rest of the
    document is invalid."""
    model, key = document.model, document.key
    if key is not None and key[0] in _ABOUT_A_SERVICE and is_label(key[1]) and is_label(key[2]):
        yield ("service",), (key[2], key[1])
    if isinstance(model, AccessPolicy):
        for i, rule in enumerate(model.rules):
            for field in ("services", "not_services"):
                for j, ref in enumerate(getattr(rule, field) or []):
                    yield ("rules", i, field, j), split_ref(ref, model.namespace)
    if isinstance(model, Service):
        for j, ref in enumerate(model.calls or []):
            yield ("calls", j), split_ref(ref, model.namespace)


def _unknown(name: str, namespace: str, known: set[tuple[str, str]]) -> str:
    there = sorted(n for ns, n in known if ns == namespace)
    if there:
        return f"unknown service {show(name)} in namespace {show(namespace)}; its services: {', '.join(there)}"
    return (
        f"unknown service {show(name)} in namespace {show(namespace)}; that namespace has no services "
        "(a Service document defines one, in this file or applied before)"
    )


# === Deleting ===


def referrers(key: Key, resources: Sequence[Resource]) -> list[str]:
    """The resources that name the Service ``key`` (each with where), so it cannot go."""
    kind, namespace, name = key
    if kind != "Service":
        return []
    found: list[str] = []
    for resource in sorted(resources, key=key_of):
        other = key_of(resource)
        if other[0] in _ABOUT_A_SERVICE and other[1:] == (namespace, name):
            found.append(label(other))
        for where, ref in _refs(resource):
            if split_ref(ref, other[1]) == (name, namespace):
                found.append(f"{label(other)} ({where})")
    return found


def _refs(resource: Resource) -> Iterator[tuple[str, str]]:
    for j, ref in enumerate(resource.get("calls") or [] if resource["kind"] == "Service" else []):
        yield f"calls[{j}]", ref
    if resource["kind"] == "AccessPolicy":
        for i, rule in enumerate(resource["rules"]):
            for field in ("services", "not_services"):
                for j, ref in enumerate(rule.get(field) or []):
                    yield f"rules[{i}].{field}[{j}]", ref


def in_use_message(key: Key, names: list[str]) -> str:
    return f"cannot delete {label(key)}: still named by {', '.join(names)}; delete or change those first"
