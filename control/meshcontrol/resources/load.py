"""``meshctl apply``'s file in, validated resources out, or a :class:`ConfigError` listing
every problem of every document, worded as the sidecar's config errors are:

    mesh.yaml:12: documents[1] (Route shop/orders): rules[1].to[0].version: 'V2' is not a valid name; ...

``documents[I]`` counts the file's documents from 0 (empty ones included), as ``rules[1]``
counts rules; the resource it is, when its kind and name can be read, follows in brackets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from meshproxy.config.checks import check_engine
from meshproxy.config.errors import ConfigError, ConfigIssue, Path, format_path
from meshproxy.config.messages import Finding, describe, show
from meshproxy.config.model import Config
from meshproxy.config.translate import translate
from pydantic import ValidationError

from .affinity import check_hashing
from .keys import MESH_KEY, NAME_FIELD, Key, label
from .models import KINDS, AccessPolicy, Document, Resource, Route
from .names import is_label
from .references import ParsedDocument, check_references
from .tcp_services import check_tcp_services, placed
from .yaml_documents import read_yaml_documents

_KIND_CHOICES = ", ".join(KINDS)


def load_documents(text: str, source: str, current: Sequence[Resource] = ()) -> list[Resource]:
    """The stored form of every document of ``text``, checked alone and together with the
    ``current`` set of the store (references, duplicates, affinity, tcp services' ports and
    policies), each tcp Service with its ``port_offset`` kept or given (then the store's tcp
    Services stored without one, given theirs: ``tcp_services.placed``). Raises ConfigError."""
    issues: list[ConfigIssue] = []
    documents: list[ParsedDocument] = []
    reads = read_yaml_documents(text, source)
    for index, read in enumerate(reads):
        if isinstance(read, ConfigError):
            # YAML-level problems (a duplicate key): their lines are right, their paths get the prefix.
            issues += [ConfigIssue(i.source, i.line, _prefixed(index, None, i.path), i.message) for i in read.issues]
            continue
        if read.data is None:
            continue  # an empty document, as after a trailing `---`
        document, findings = _parse(index, read.data, read.line_of)
        documents.append(document)
        issues += _issues(source, document, findings)
    if not reads or not documents and not issues:
        raise ConfigError([ConfigIssue(source, None, "", f"no documents; expected YAML documents of kind {_KIND_CHOICES}, separated by ---")])
    found = check_references(documents, current) + check_hashing(documents, current)
    for located in found + check_tcp_services(documents, current):
        issues += _issues(source, located.document, [located.finding])
    if issues:
        raise ConfigError(issues)
    return placed([d.model.stored() for d in documents if d.model is not None], current)


def _parse(index: int, data: Any, line_of: Callable[[Path], int | None]) -> tuple[ParsedDocument, list[Finding]]:
    if not isinstance(data, dict):
        finding = Finding((), f"expected a mapping (one resource with a kind: {_KIND_CHOICES}), got {describe(data)}")
        return ParsedDocument(index, None, line_of, None), [finding]
    kind = data.get("kind")
    if "kind" not in data:
        findings = [Finding(("kind",), f"missing required key 'kind'; expected one of {_KIND_CHOICES}", anchor=())]
        return ParsedDocument(index, None, line_of, None), findings
    if kind not in KINDS:
        findings = [Finding(("kind",), f"{show(kind)} is not a valid kind; expected one of {_KIND_CHOICES}")]
        return ParsedDocument(index, None, line_of, None), findings
    key = _key(kind, data)
    model_class = KINDS[kind]
    try:
        model: Document = model_class.model_validate(data)
    except ValidationError as error:
        return ParsedDocument(index, key, line_of, None), translate(error.errors(include_url=False), root=model_class)
    return ParsedDocument(index, key, line_of, model), _engine_findings(model)


def _key(kind: str, data: dict[str, Any]) -> Key | None:
    """The document's key, read from its data as written (for naming it in messages, and so an
    invalid document still counts as defined when others refer to it)."""
    if kind == "Mesh":
        return MESH_KEY
    name, namespace = data.get(NAME_FIELD[kind]), data.get("namespace", "default")
    if isinstance(name, str) and isinstance(namespace, str):
        return kind, namespace, name
    return None


def _issues(source: str, document: ParsedDocument, findings: list[Finding]) -> list[ConfigIssue]:
    return [
        ConfigIssue(source, document.line_of(f.line_path), _prefixed(document.index, document.key, format_path(f.path)),
                    f.message)
        for f in findings
    ]


def _prefixed(index: int, key: Key | None, path: str) -> str:
    # The resource is named only by a valid name: an invalid one is the message itself.
    named = key is not None and (key == MESH_KEY or is_label(key[1]) and is_label(key[2]))
    where = f"documents[{index}] ({label(key)})" if named and key else f"documents[{index}]"
    return f"{where}: {path}" if path else where


# === Regular expressions and hash policies, judged by the engine ===


def _engine_findings(model: Document) -> list[Finding]:
    """The regexes of a Route (matches, regex_rewrite) or an AccessPolicy, and a Route's hash_policy, judged by the
    sidecar's engine: a sidecar must be able to run what the control plane sends it (the
    engine's syntax is the Rust regex crate's; Envoy's RE2 refuses the same look-around and
    backreferences)."""
    listener: dict[str, Any] = {"name": "check", "address": "127.0.0.1:0"}
    clusters = [{"name": "c"}, {"name": "hashing", "lb": "ring_hash"}]
    if isinstance(model, Route) and (_any_regex([r.match_.model_dump(mode="json") for r in model.rules])
                                     or any(rule.hash_policy or rule.regex_rewrite for rule in model.rules)):
        # A rule with a hash_policy goes to a hashing cluster, so that only the policy's own
        # problems are found here: whether the service hashes is the affinity check's.
        listener["routes"] = [{"match": rule.match_.model_dump(mode="json"),
                               "cluster": "hashing" if rule.hash_policy else "c",
                               "hash_policy": [h.model_dump(mode="json", exclude_none=True) for h in rule.hash_policy],
                               "regex_rewrite": rule.regex_rewrite.model_dump(mode="json") if rule.regex_rewrite else None}
                              for rule in model.rules]
        moved: Path = ("listeners", 0, "routes")
        into: Path = ("rules",)
    elif isinstance(model, AccessPolicy) and _any_regex(rules := [r.sidecar_rule() for r in model.rules]):
        listener["authorization"] = [{"name": "check", "rules": rules}]
        moved, into = ("listeners", 0, "authorization", 0, "rules"), ("rules",)
    else:
        return []
    findings = check_engine(Config.model_validate({"listeners": [listener], "clusters": clusters}))
    # A route's findings are under match or hash_policy (listeners[0].routes[i].match...), a
    # rule's directly under it: both move to rules[i] of the document.
    return [Finding(into + f.path[len(moved):], f.message) for f in findings if f.path[: len(moved)] == moved]


def _any_regex(parts: list[dict[str, Any]]) -> bool:
    for part in parts:
        if part.get("path_regex") is not None:
            return True
        for headers in (part.get("headers") or {}, part.get("not_headers") or {}):
            if any("regex" in m for m in headers.values()):
                return True
    return False

