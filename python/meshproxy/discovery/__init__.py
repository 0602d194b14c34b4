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

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runner import Discovery

__all__ = ["Discovery"]

# Discovery is imported on first use (PEP 562): the config checks read endpoint files with
# `endpoints.py`, and the validator child `meshproxy run` starts for every config it loads need
# nothing else of this package (the runner, its threads, the merged snapshot).
if not TYPE_CHECKING:
    # Hidden from type checkers, which would otherwise accept any attribute of the package.

    def __getattr__(name: str) -> object:
        if name != "Discovery":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from .runner import Discovery

        globals()[name] = Discovery
        return Discovery

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})
