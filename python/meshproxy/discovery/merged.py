"""The one snapshot every source feeds: the latest endpoint list each source reported for each
cluster, and the engine document with those lists in place of the configured ones.

Sources are told apart by a key the runner hands out, not by cluster: while a reload starts a
cluster's new source, the old one still serves that cluster, and a later source (a control
plane's) may report many clusters at once. Which source's list a cluster runs is the runner's
choice: it passes the lists to :meth:`MergedSnapshot.render`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .endpoints import Endpoint

SourceKey = int


class MergedSnapshot:
    def __init__(self) -> None:
        self._lists: dict[SourceKey, dict[str, tuple[Endpoint, ...]]] = {}
        # The last document rendered into, parsed: updates re-render the same one many times.
        self._parsed: tuple[str, dict[str, Any]] | None = None

    def open(self, source: SourceKey) -> None:
        """Accepts reports from ``source`` from now on."""
        self._lists.setdefault(source, {})

    def forget(self, source: SourceKey) -> None:
        """Drops what ``source`` reported; its later reports are ignored."""
        self._lists.pop(source, None)

    def report(self, source: SourceKey, cluster: str, endpoints: Sequence[Endpoint]) -> bool:
        """Records a source's list for a cluster; says whether it differs from the last one.
        Reports of a source not open (stopped, or never started) are ignored."""
        lists = self._lists.get(source)
        if lists is None or lists.get(cluster) == tuple(endpoints):
            return False
        lists[cluster] = tuple(endpoints)
        return True

    def endpoints(self, source: SourceKey, cluster: str) -> tuple[Endpoint, ...] | None:
        """What ``source`` last reported for ``cluster``; None before its first report."""
        return self._lists.get(source, {}).get(cluster)

    def render(self, engine_json: str, lists: Mapping[str, Sequence[Endpoint]]) -> str:
        """``engine_json`` with the endpoints of each cluster in ``lists`` replaced by its list."""
        if not lists:
            return engine_json
        if self._parsed is None or self._parsed[0] is not engine_json:
            self._parsed = (engine_json, json.loads(engine_json))
        document = self._parsed[1]
        clusters = [
            {**cluster, "endpoints": [{"address": e.address, "weight": e.weight} for e in lists[cluster["name"]]]}
            if cluster["name"] in lists
            else cluster
            for cluster in document.get("clusters", ())
        ]
        return json.dumps({**document, "clusters": clusters}, separators=(",", ":"))
