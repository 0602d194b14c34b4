"""Stored resources back in the form a file writes them (``timeout: 5s`` for ``timeout_ms:
5000``, keys left at nothing dropped), so ``meshctl get -o yaml`` prints a file that ``meshctl
apply`` takes again; and the JSON Schema of a document, for editors."""

from __future__ import annotations

from typing import Annotated, Any

from meshproxy.config.schema import SchemaGenerator
from pydantic import Field, TypeAdapter

from .models import AccessPolicy, Mesh, Resource, Route, Service, TrafficPolicy
from .traffic_policy import SECTIONS


def as_document(resource: Resource) -> Resource:
    out = _without_empty(resource)
    if out["kind"] == "Route":
        out["rules"] = [_rule_document(rule) for rule in out["rules"]]
    if out["kind"] == "AccessPolicy":
        out["rules"] = [_without_empty(rule) for rule in out["rules"]]
    if out["kind"] == "TrafficPolicy":
        for section in SECTIONS:
            if section in out:
                out[section] = _section_document(out[section])
        if "idle_timeout_ms" in out:
            out["idle_timeout"] = _duration(out.pop("idle_timeout_ms"))
    if "cert_lifetime_s" in out:
        out["cert_lifetime"] = _duration(out.pop("cert_lifetime_s") * 1000)
    return out


def _rule_document(rule: Resource) -> Resource:
    out = _without_empty(rule)
    if "match" in out:
        out["match"] = _without_empty(out["match"])
        if not out["match"]:
            del out["match"]
    if out.get("idle_timeout_ms") == 0:
        del out["idle_timeout_ms"]  # none, the default: a file leaves it out
    for key in ("timeout", "idle_timeout"):
        if f"{key}_ms" in out:
            out[key] = _duration(out.pop(f"{key}_ms"))
    for empty in ("hash_policy", "to"):
        if not out.get(empty):
            out.pop(empty, None)
    for section in ("retry", "redirect", "direct_response", "mirror", "fault", "rate_limit", "regex_rewrite"):
        if section in out:
            out[section] = _section_document(out[section])
    return out


def _section_document(section: Resource) -> Resource:
    """A sidecar section stored with ``<key>_ms`` durations (``traffic_policy.in_millis``)."""
    out: Resource = {}
    for key, value in section.items():
        if key.endswith("_ms") and isinstance(value, int):
            out[key.removesuffix("_ms")] = _duration(value)
        elif isinstance(value, dict):
            out[key] = _section_document(value)
        elif value is not None or key == "success_rate":
            out[key] = value  # success_rate: null turns on-by-default success-rate ejection off
    return out


def _without_empty(data: Resource) -> Resource:
    return {k: v for k, v in data.items() if v is not None and v != {}}


def _duration(ms: int) -> str:
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def json_schema() -> dict[str, Any]:
    """The schema of one document (any of the kinds, told apart by `kind`)."""
    adapter: TypeAdapter[Any] = TypeAdapter(
        Annotated[Service | Route | AccessPolicy | TrafficPolicy | Mesh, Field(discriminator="kind")]
    )
    return adapter.json_schema(by_alias=True, schema_generator=SchemaGenerator)
