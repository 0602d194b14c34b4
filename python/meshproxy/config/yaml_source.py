"""YAML text to plain data plus a line for every node, so an issue at
``listeners[0].routes[1].cluster`` can say which line of the file that is.

    read_yaml(text, "sidecar.yaml")            # one document: a sidecar's config
    read_yaml_documents(text, "mesh.yaml")     # several, between ---: meshctl apply's file

Each document is composed (not loaded) with PyYAML's safe loader, then built by hand: that is
where duplicate keys are caught (PyYAML keeps the last silently) and where each node's line is
recorded. Scalars are still typed by SafeLoader's own resolver (ints, floats, bools, null).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import ConfigError, ConfigIssue, Path, format_path
from .gc_pause import cycle_collection_paused
from .messages import show

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# Aliases let a tiny file expand exponentially ("billion laughs"). What an alias expands to
# is counted against this; nodes written out in the file are not (a mesh-sized config has
# half a million), no real config's aliases come near it.
_MAX_NODES = 200_000
# libyaml composes a mesh-sized file (half a million nodes) some ten times faster than PyYAML's
# Python parser, but words syntax errors its own way: a file it refuses is parsed again by
# PyYAML, so messages stay PyYAML's. Building the data from the nodes is the same for both.
_FAST_LOADER: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)


@dataclass
class YamlDocument:
    """Plain data (dicts, lists, scalars; None for an empty document) and node lines."""

    data: object
    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int | None:
        """1-based line of the node at ``path``, else of its nearest ancestor in the file.
        Keys compare case-insensitively as a fallback: header names are stored lowercased,
        so the engine reports `x-channel` where the file may say `X-Channel`."""
        folded = self._folded
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            if prefix in self.lines:
                return self.lines[prefix]
            if _fold(prefix) in folded:
                return folded[_fold(prefix)]
        return None

    @cached_property
    def _folded(self) -> dict[Path, int]:
        return {_fold(p): line for p, line in self.lines.items()}


DocumentRead = YamlDocument | ConfigError
"""One document of a multi-document text: its data and lines, or what is wrong with its YAML."""

T = TypeVar("T")


def read_yaml(text: str, source: str) -> YamlDocument:
    """Parse one YAML document; raises :class:`ConfigError` for syntax errors, duplicate keys
    and YAML features a config has no use for (custom tags, recursive aliases)."""
    # The composed nodes are objects too: the pause covers composing as well as building.
    with cycle_collection_paused():
        return _parsed(text, source, lambda loader: _document(loader, loader.get_single_node(), source))


def read_yaml_documents(text: str, source: str) -> list[DocumentRead]:
    """Every document of ``text`` (``---`` between them), in order, each read as
    :func:`read_yaml` reads its one, with lines counted in the whole text. What is wrong with
    one document alone (a duplicate key, a custom tag) is that document's ConfigError, in its
    place; a syntax error anywhere raises ConfigError: past it the parser cannot tell where
    documents begin."""
    with cycle_collection_paused():
        return _parsed(text, source, lambda loader: _documents(loader, source))


def _parsed(text: str, source: str, read: Callable[[yaml.SafeLoader], T]) -> T:
    """``read`` applied to a loader of ``text``: libyaml's when there is one, else (or when
    libyaml refuses the text) PyYAML's, whose syntax errors become the ConfigError."""
    if _FAST_LOADER is not None:
        fast = _FAST_LOADER(text)
        try:
            return read(fast)
        except yaml.YAMLError:
            pass  # read again below by PyYAML's parser, for its wording
        finally:
            fast.dispose()
    loader = yaml.SafeLoader(text)
    try:
        return read(loader)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_syntax_issue(exc, source)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(source, None, "", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()


def _documents(loader: yaml.SafeLoader, source: str) -> list[DocumentRead]:
    out: list[DocumentRead] = []
    while loader.check_node():
        node = loader.get_node()
        try:
            out.append(_document(loader, node, source))
        except ConfigError as error:
            out.append(error)
    return out


def _document(loader: yaml.SafeLoader, root: Node | None, source: str) -> YamlDocument:
    """The data and lines of a composed document."""
    if root is None:
        return YamlDocument(None)
    builder = _Builder(loader, source)
    data = builder.build(root, ())
    if builder.issues:
        raise ConfigError(builder.issues)
    return YamlDocument(data, builder.lines)


def _syntax_issue(exc: yaml.MarkedYAMLError, source: str) -> ConfigIssue:
    mark = exc.problem_mark or exc.context_mark
    message = exc.problem or exc.context or "cannot parse"
    if exc.context and exc.problem:
        if exc.context.startswith("while"):
            # "found X (while scanning Y on line N)": the problem first, where it began after.
            where = f" on line {exc.context_mark.line + 1}" if exc.context_mark else ""
            message = f"{exc.problem} ({exc.context}{where})"
        else:
            message = f"{exc.context}, {exc.problem}"  # "expected A, but found B"
    return ConfigIssue(source, mark.line + 1 if mark else None, "", f"invalid YAML: {message}")


def _fold(path: Path) -> Path:
    return tuple(s.lower() if isinstance(s, str) else s for s in path)


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, source: str) -> None:
        self.loader = loader
        self.source = source
        self.lines: dict[Path, int] = {}
        self.issues: list[ConfigIssue] = []
        self.count = 0  # nodes built again through an alias
        self.built: set[int] = set()  # ids of collection nodes built at least once
        self.expanding = 0  # depth of collection nodes being built again
        self.open: set[int] = set()  # ids of collection nodes being built: alias cycles

    def issue(self, node: Node, path: Path, message: str) -> None:
        self.issues.append(ConfigIssue(self.source, node.start_mark.line + 1, format_path(path), message))

    def build(self, node: Node, path: Path, line_node: Node | None = None) -> object:
        """Plain data for ``node``; its line is that of ``line_node`` (a mapping key) if given."""
        self.lines.setdefault(path, (line_node or node).start_mark.line + 1)
        again = not isinstance(node, ScalarNode) and id(node) in self.built
        if self.expanding or again:
            self.count += 1
            if self.count > _MAX_NODES:
                raise ConfigError(
                    [ConfigIssue(self.source, None, "", "document too large (too many nodes after expanding aliases)")]
                )
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.open:
            self.issue(node, path, "recursive YAML alias; a config must be a tree")
            return None
        self.open.add(id(node))
        self.built.add(id(node))
        self.expanding += again
        try:
            if isinstance(node, MappingNode) and node.tag == _MAP_TAG:
                return self.mapping(node, path)
            if isinstance(node, SequenceNode) and node.tag == _SEQ_TAG:
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            self.issue(node, path, f"unsupported YAML tag {node.tag}")
            return None
        finally:
            self.open.discard(id(node))
            self.expanding -= again

    def scalar(self, node: ScalarNode, path: Path) -> object:
        if node.tag not in self.loader.yaml_constructors:
            # SafeLoader knows only plain YAML types; `!!python/...` and custom tags land here.
            self.issue(node, path, f"unsupported YAML tag {node.tag}")
            return None
        try:
            return self.loader.construct_object(node)
        except (yaml.constructor.ConstructorError, ValueError) as exc:
            problem = exc.problem if isinstance(exc, yaml.MarkedYAMLError) else str(exc)
            self.issue(node, path, f"invalid YAML value: {problem}")
            return None

    def mapping(self, node: MappingNode, path: Path) -> dict[str, object]:
        out: dict[str, object] = {}
        first_line: dict[str, int] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            key = self.key(key_node, path)
            if key is None:
                continue
            if key in first_line:
                self.issue(
                    key_node, (*path, key), f"duplicate key {show(key)}; first defined on line {first_line[key]}"
                )
                continue
            first_line[key] = key_node.start_mark.line + 1
            out[key] = self.build(value_node, (*path, key), line_node=key_node)
        # `<<: *base` fills in keys the mapping does not set itself, whatever their order.
        for merged in merges:
            for key_node, value_node in self.merged_pairs(merged, path):
                key = self.key(key_node, path)
                if key is not None and key not in out:
                    out[key] = self.build(value_node, (*path, key), line_node=key_node)
        return out

    def merged_pairs(self, node: Node, path: Path) -> Iterator[tuple[Node, Node]]:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        for source in sources:
            if not isinstance(source, MappingNode):
                self.issue(source, path, "a merge key (<<) needs a mapping or a list of mappings")
                continue
            yield from ((k, v) for k, v in source.value if k.tag != _MERGE_TAG)

    def key(self, node: Node, path: Path) -> str | None:
        # Keys are read as written: `on:` or `200:` name a key, not a boolean or a number.
        if isinstance(node, ScalarNode):
            return str(node.value)
        self.issue(node, path, "a mapping key must be a plain string")
        return None
