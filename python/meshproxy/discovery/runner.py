"""Runs the endpoint sources of a proxy's config and keeps the engine's endpoint lists current.

Every config the proxy applies goes through :meth:`Discovery.apply`, which starts the sources
of clusters whose ``discovery`` settings are new or changed (and waits for their first lists),
keeps the sources whose settings stayed, and hands the engine the document with every
discovered list in place. Between configs, each change a source reports is merged into the one
snapshot and applied by a single thread, so a burst of reports costs one apply. The engine
keeps the state and pooled connections of every endpoint whose address stays, so an update
disturbs no request in flight.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
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
        self._applied: str | None = None
        """What the engine runs now: that config with the discovered lists in place."""
        self._apply_update: Callable[[str], object] | None = None
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
            engine_json = self._merged.render(document.engine_json, _owners(running))
            try:
                result = apply(engine_json)
            except BaseException as error:
                failure, retired = error, list(started.values())
            else:
                retired = [r for c, r in self._running.items() if running.get(c) is not r]
                self._running, self._engine_json, self._applied = running, document.engine_json, engine_json
                self._start_applier()
            for gone in retired:
                self._merged.forget(gone.key)
        # Stopped outside the lock: a source may be waiting for it to report.
        for gone in retired:
            gone.source.stop()
        if failure is not None:
            raise failure
        return result

    def follow(self, apply_update: Callable[[str], object]) -> None:
        """From now on, applies each change the sources report with ``apply_update``."""
        with self._lock:
            self._apply_update = apply_update
            self._start_applier()

    def document(self, document: EngineDocument) -> EngineDocument:
        """What the engine runs now for ``document`` (the config applied last): the same
        document with the discovered lists in place of its configured ones."""
        applied = self._applied
        if applied is None or document.engine_json is not self._engine_json or applied is document.engine_json:
            return document
        return document._replace(engine_json=applied)

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
                self._changed.set()

    # --- applying updates --------------------------------------------------------------

    def _start_applier(self) -> None:
        """Starts the applying thread once there is an engine and a source; under the lock."""
        if self._applier is None and self._apply_update is not None and self._running and not self._closed:
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
                assert self._apply_update is not None and self._engine_json is not None
                engine_json = self._merged.render(self._engine_json, _owners(self._running))
                if engine_json == self._applied:
                    continue
                try:
                    self._apply_update(engine_json)
                except (ValueError, OSError, RuntimeError) as error:
                    # The sources check their lists as the schema would, so this is unlikely;
                    # the lists already applied stay.
                    log.error("discovered endpoints refused by the engine; keeping the running ones: %s", error)
                else:
                    self._applied = engine_json


def _owners(running: Mapping[str, _Running]) -> dict[str, SourceKey]:
    return {cluster: r.key for cluster, r in running.items()}
