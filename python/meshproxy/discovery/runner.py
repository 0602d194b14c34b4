"""Runs the endpoint sources of a proxy's config and keeps the engine's endpoint lists current.

Every config the proxy applies goes through :meth:`Discovery.apply`, which starts the sources
of clusters whose ``discovery`` settings are new or changed (and waits for their first lists),
keeps the sources whose settings stayed, and hands the engine the document with every
discovered list in place. Between configs, each change a source reports is merged into the one
snapshot, and a single thread hands the engine the lists that changed, one cluster at a time
(the engine's ``set_endpoints``): nothing else is recompiled, so an update costs the size of
its list, not of the config, and a burst of reports for a cluster costs one call. The engine
keeps the state and pooled connections of every endpoint whose address stays, so an update
disturbs no request in flight.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, TypeVar

from ..engine_document import EngineDocument
from .endpoints import Endpoint
from .merged import MergedSnapshot, SourceKey
from .source import Settings, Source, source_for

log = logging.getLogger("meshproxy")

T = TypeVar("T")
_SHOWN_ADDRESSES = 5


class _Running(NamedTuple):
    key: SourceKey
    settings: Settings
    source: Source


class Discovery:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._merged = MergedSnapshot()
        self._keys = itertools.count()
        self._running: dict[str, _Running] = {}
        """Cluster name → the source its endpoints come from, in the config applied last."""
        self._engine_json: str | None = None
        """The config applied last, as given (before the discovered lists are put in)."""
        self._engine_lists: dict[str, tuple[Endpoint, ...]] = {}
        """Cluster name → the list the engine runs for it, for each cluster of ``_running``."""
        self._refused: dict[str, tuple[SourceKey, tuple[Endpoint, ...]]] = {}
        """Cluster name → the last list the engine refused for it, and from which source: not
        offered again, and left out of the next config in favour of the running list."""
        self._rendered: str | None = None
        """``_engine_json`` with ``_engine_lists`` in place, made when first asked for."""
        self._set_endpoints: Callable[[str, Sequence[Endpoint]], object] | None = None
        self._dirty: set[str] = set()
        """Clusters whose source reported a new list since the applying thread last looked."""
        self._changed = threading.Event()
        self._closed = False
        self._applier: threading.Thread | None = None

    # --- configs -----------------------------------------------------------------------

    def apply(self, document: EngineDocument, apply: Callable[[str], T]) -> T:
        """Calls ``apply`` (an engine's apply, or its constructor) with ``document``'s engine
        JSON, its discovered lists in place, and returns what it returns. When ``apply`` raises,
        the sources started for ``document`` are stopped and the running ones carry on."""
        if not document.discovery and not self._running:
            return apply(document.engine_json)  # no discovery: nothing to put in
        started = {
            cluster: self._source(cluster, settings)
            for cluster, settings in document.discovery.items()
            if cluster not in self._running or self._running[cluster].settings != settings
        }
        self._start(started.values())
        failure: BaseException | None = None
        with self._lock:
            running = {**{c: r for c, r in self._running.items() if c in document.discovery}, **started}
            lists = {cluster: self._wanted(cluster, r) for cluster, r in running.items()}
            engine_json = self._merged.render(document.engine_json, lists)
            try:
                result = apply(engine_json)
            except BaseException as error:
                failure, retired = error, list(started.values())
            else:
                retired = [r for c, r in self._running.items() if running.get(c) is not r]
                self._running, self._engine_json, self._engine_lists = running, document.engine_json, lists
                self._rendered = engine_json
                self._refused = {c: r for c, r in self._refused.items() if c in running and running[c].key == r[0]}
                self._start_applier()
            for gone in retired:
                self._merged.forget(gone.key)
        # Stopped outside the lock: a source may be waiting for it to report.
        for gone in retired:
            gone.source.stop()
        if failure is not None:
            raise failure
        return result

    def follow(self, set_endpoints: Callable[[str, Sequence[Endpoint]], object]) -> None:
        """From now on, hands ``set_endpoints`` (an engine's) each cluster's list when its source
        reports a new one."""
        with self._lock:
            self._set_endpoints = set_endpoints
            self._start_applier()

    def document(self, document: EngineDocument) -> EngineDocument:
        """What the engine runs now for ``document`` (the config applied last): the same
        document with the discovered lists in place of its configured ones."""
        with self._lock:
            if document.engine_json is not self._engine_json or not self._running:
                return document
            if self._rendered is None:
                self._rendered = self._merged.render(document.engine_json, self._engine_lists)
            return document._replace(engine_json=self._rendered)

    def close(self) -> None:
        """Stops every source and the applying thread. Idempotent."""
        with self._lock:
            self._closed = True
            running, self._running = self._running, {}
            for gone in running.values():
                self._merged.forget(gone.key)
        self._changed.set()
        if self._applier is not None:
            self._applier.join()
        for gone in running.values():
            gone.source.stop()

    # --- sources -----------------------------------------------------------------------

    def _source(self, cluster: str, settings: Settings) -> _Running:
        key = next(self._keys)
        with self._lock:
            self._merged.open(key)
        return _Running(key, settings, source_for(cluster, settings))

    def _start(self, sources: Iterable[_Running]) -> None:
        """Starts sources side by side, each making its first attempt (a DNS query may take
        seconds to fail), and returns once every one has made it."""
        threads = [
            threading.Thread(target=self._start_one, args=(running,), name="meshproxy-discovery-start")
            for running in sources
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _start_one(self, running: _Running) -> None:
        def report(cluster: str, endpoints: Sequence[Endpoint]) -> None:
            self._report(running, cluster, endpoints)

        running.source.start(report)

    def _report(self, running: _Running, cluster: str, endpoints: Sequence[Endpoint]) -> None:
        with self._lock:
            if not self._merged.report(running.key, cluster, endpoints):
                return
            shown = ", ".join(e.address if e.weight == 1 else f"{e.address} (weight {e.weight})"
                              for e in endpoints[:_SHOWN_ADDRESSES])
            more = f", and {len(endpoints) - _SHOWN_ADDRESSES} more" if len(endpoints) > _SHOWN_ADDRESSES else ""
            log.info("cluster %s: %d endpoint%s from %s%s", cluster, len(endpoints), "" if len(endpoints) == 1 else "s",
                     running.source.description, f": {shown}{more}" if endpoints else "")
            if self._running.get(cluster) is running:
                self._dirty.add(cluster)
                self._changed.set()

    # --- applying updates --------------------------------------------------------------

    def _wanted(self, cluster: str, running: _Running) -> tuple[Endpoint, ...]:
        """The list a config should carry for ``cluster``: its source's latest (none before the
        first report), unless the engine refused that one, in which case the running list."""
        latest = self._merged.endpoints(running.key, cluster) or ()
        if self._refused.get(cluster) == (running.key, latest) and cluster in self._engine_lists:
            return self._engine_lists[cluster]
        return latest

    def _start_applier(self) -> None:
        """Starts the applying thread once there is an engine and a source; under the lock."""
        if self._applier is None and self._set_endpoints is not None and self._running and not self._closed:
            self._applier = threading.Thread(target=self._apply_updates, name="meshproxy-discovery", daemon=True)
            self._applier.start()
            self._changed.set()  # reports that came between the last apply and now

    def _apply_updates(self) -> None:
        while True:
            self._changed.wait()
            self._changed.clear()
            with self._lock:
                if self._closed:
                    return
                dirty, self._dirty = self._dirty, set()
                for cluster in dirty:
                    running = self._running.get(cluster)
                    if running is not None:
                        self._update(cluster, running)

    def _update(self, cluster: str, running: _Running) -> None:
        """Hands the engine ``cluster``'s latest list if it differs from the one it runs; under
        the lock, so that a config being applied and an update never cross."""
        assert self._set_endpoints is not None
        latest = self._merged.endpoints(running.key, cluster) or ()
        if latest == self._engine_lists.get(cluster) or self._refused.get(cluster) == (running.key, latest):
            return
        try:
            self._set_endpoints(cluster, latest)
        except (ValueError, OverflowError, RuntimeError) as error:
            # The sources check their lists as the schema would, so this is unlikely; the
            # running list stays, and the next config carries it rather than this one.
            log.error("cluster %s: discovered endpoints refused by the engine; keeping the running ones: %s",
                      cluster, error)
            self._refused[cluster] = (running.key, latest)
        else:
            self._engine_lists[cluster] = latest
            self._refused.pop(cluster, None)
            self._rendered = None
