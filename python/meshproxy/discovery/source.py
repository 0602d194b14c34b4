"""What every endpoint source does, and the one place that turns a cluster's ``discovery``
settings (as the engine document writes them) into a source.

A source reports whole lists: each report replaces what it said before about that cluster.
It never reports a list it could not read or resolve; keeping the last good one is the rule
for every source, so the runner need not know why a source went quiet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from .endpoints import Endpoint

OnUpdate = Callable[[str, Sequence[Endpoint]], None]
"""Called with a cluster's name and its new endpoint list, from the source's own thread."""

Settings = Mapping[str, Any]
"""One cluster's ``discovery`` object, as the engine document writes it."""


class Source(Protocol):
    description: str
    """Says where the endpoints come from, for log lines: ``file /etc/mesh/orders.yaml``."""

    def start(self, on_update: OnUpdate) -> None:
        """Makes a first attempt (reporting its list, if it got one, before returning), then
        follows changes on a thread of its own."""

    def stop(self) -> None:
        """Stops following; no report comes after this returns."""


def source_for(cluster: str, settings: Settings) -> Source:
    """The source a cluster's settings describe. Each kind imports its library (watchfiles,
    dnspython) only when a cluster uses it."""
    kind = settings.get("type")
    if kind == "file":
        from .file_source import FileSource

        return FileSource(cluster, settings["path"])
    if kind == "dns":
        from .dns_source import DnsSource, DnsSettings

        return DnsSource(cluster, DnsSettings.read(settings))
    raise ValueError(f"cluster {cluster!r}: unknown discovery type {kind!r}; expected file or dns")
