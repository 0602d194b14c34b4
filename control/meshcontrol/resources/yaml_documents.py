"""A multi-document YAML file (``---`` between documents) as one read per document, each with
the lines of its nodes in the whole file.

The sidecar's own reader does it (:func:`meshproxy.config.yaml_source.read_yaml_documents`,
beside ``read_yaml`` for a sidecar's one-document file, on the same code path), so duplicate
keys, tags, aliases and syntax errors are caught and worded exactly as in a sidecar's config.
"""

from meshproxy.config.yaml_source import DocumentRead, read_yaml_documents

__all__ = ["DocumentRead", "read_yaml_documents"]
