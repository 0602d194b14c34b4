"""A multi-document YAML file (``---`` between documents) as one :class:`YamlDocument` per
document, each with the lines of its nodes in the whole file.

The sidecar reads one document per file (``meshproxy.config.yaml_source.read_yaml``); this
reads several with the very same builder, so duplicate keys, tags, aliases and syntax errors
are caught and worded exactly as there.
"""

from __future__ import annotations

import yaml
from meshproxy.config.errors import ConfigError, ConfigIssue
from meshproxy.config.gc_pause import cycle_collection_paused
from meshproxy.config.yaml_source import _FAST_LOADER, YamlDocument, _document, _syntax_issue

DocumentRead = YamlDocument | ConfigError
"""A document's data and lines, or what is wrong with its YAML (a duplicate key, say)."""


def read_yaml_documents(text: str, source: str) -> list[DocumentRead]:
    """Every document of ``text``, in order. A syntax error anywhere raises ConfigError: past
    it the parser cannot tell where documents begin."""
    with cycle_collection_paused():
        if _FAST_LOADER is not None:
            try:
                return _read(_FAST_LOADER, text, source)
            except yaml.YAMLError:
                pass  # read again by PyYAML's parser, for its wording
        try:
            return _read(yaml.SafeLoader, text, source)
        except yaml.MarkedYAMLError as exc:
            raise ConfigError([_syntax_issue(exc, source)]) from None
        except yaml.YAMLError as exc:
            raise ConfigError([ConfigIssue(source, None, "", f"invalid YAML: {exc}")]) from None


def _read(loader_class: type[yaml.SafeLoader], text: str, source: str) -> list[DocumentRead]:
    loader = loader_class(text)
    try:
        out: list[DocumentRead] = []
        while loader.check_node():
            node = loader.get_node()
            try:
                out.append(_document(loader, node, source))
            except ConfigError as error:
                out.append(error)
        return out
    finally:
        loader.dispose()
