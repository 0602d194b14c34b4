"""Endpoint discovery: where a cluster's endpoints come from when its config does not list them.

    sources  ──reports──▶  one merged snapshot  ──a changed list, per cluster──▶  engine

- ``source.py``: what a source does (start with a callback, stop), and which one a cluster's
  ``discovery`` settings describe; ``file_source.py`` (a watched YAML/JSON list) and
  ``dns_source.py`` with ``dns_resolve.py`` (A/AAAA/SRV records, re-resolved on TTL) are the
  sources so far; a control plane's would be one more.
- ``endpoints.py``: the endpoint lists sources report, checked as the config schema would.
- ``merged.py``: the latest list from every source, rendered into the engine document.
- ``runner.py``: :class:`Discovery`, which a :class:`~meshproxy.Proxy` runs for its configs.

Nothing here imports the config schema (pydantic): ``meshproxy run`` runs discovery in the
sidecar process, from the settings the engine document carries. dnspython and watchfiles are
imported only when a source of their kind runs.
"""

from .runner import Discovery

__all__ = ["Discovery"]
