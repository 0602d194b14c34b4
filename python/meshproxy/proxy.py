"""The embedding API: run the proxy inside a Python process.

    async with Proxy("sidecar.yaml") as proxy:     # or Proxy(dict) / Proxy(Config) / Proxy(EngineDocument)
        proxy.address("outbound")                   # "127.0.0.1:15001"
        proxy.reload(new_config)                    # validate, compile, swap; keeps the old on error
        proxy.reload()                              # the same, reading the file it was given again
        proxy.stats()                               # engine counters
        proxy.metrics()                             # the same, in the Prometheus text format

``start()``/``stop()`` and ``with Proxy(...)`` work too. The engine runs on its own threads;
none of them calls into Python, so the app's event loop and GIL are not on the request path.

A Config, dict or file is validated here, with the config schema (pydantic); an
:class:`~meshproxy.EngineDocument` was validated already and is run as it is, so a proxy given
only those never imports the schema (``meshproxy run`` validates in a child process).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

from . import _native
from .admin import AdminServer
from .discovery import Discovery
from .engine_document import EngineDocument

if TYPE_CHECKING:
    from .config import Config
    from .identity_watch import IdentityWatcher
    from .config.load import Explain
    from .metrics import ProxyMetrics
    from .tracing import SpanExporter

ConfigLike: TypeAlias = "Config | dict[str, Any] | str | os.PathLike[str] | EngineDocument"


class Proxy:
    """A meshproxy data path plus its admin server, configured by one config document."""

    def __init__(
        self,
        config: ConfigLike,
        *,
        workers: int | None = None,
        drain_timeout: float = 10.0,
        source: Callable[[], ConfigLike] | None = None,
        watch_identity: bool = True,
    ) -> None:
        """``drain_timeout``: how long ``stop()`` drains; and how long a listener that stops
        accepting (removed by ``reload()``, closed by ``drain()``) keeps the TCP connections,
        tunnels and requests it has before they are closed.
        ``source`` gives the config ``reload()`` applies when called without one (and ``POST
        /reload``): by default, the file ``config`` names, read again; none for other configs.
        ``watch_identity=False`` leaves the identity files unwatched, for an owner that writes
        them itself and calls ``reload_identity()`` (a sidecar renewing its certificate with the
        control plane)."""
        # The engine and the admin server run on the document; the Config it came from, if
        # any, is kept for the `config` property.
        self._config: Config | None
        if isinstance(config, EngineDocument):
            self._document, self._config = config, None
        else:
            from .config import coerce_config

            self._config = coerce_config(config)
            self._document = self._config.engine_document()
        self._workers = workers
        self._watch_identity = watch_identity
        self._drain_timeout = drain_timeout
        self._engine: _native.Engine | None = None
        self._admin: AdminServer | None = None
        self._identity_watcher: IdentityWatcher | None = None
        self._metrics: ProxyMetrics | None = None
        self._discovery: Discovery | None = None
        self._span_exporter: SpanExporter | None = None
        self._lock = threading.Lock()
        if source is None and isinstance(config, (str, os.PathLike)):
            path = config
            source = lambda: path  # noqa: E731 (read again by reload, with the schema)
        self._source = source
        # Held for a whole reload, reading the source included: reloads happen one at a time,
        # each reading the file as it is when its turn comes. Apart from `_lock`, which probes
        # and stats take, so they never wait for a validation.
        self._reloading = threading.Lock()
        self._reload_outcomes = {"succeeded": 0, "failed": 0}
        self._held: str | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> Proxy:
        """Starts the engine, binds every listener, then the admin server. Returns at once."""
        with self._lock:
            if self._engine is not None:
                raise RuntimeError("the proxy is already running")
            # Made before the engine reads the identity files, started once it runs.
            identity_watcher = self._identity_watcher_for(self._document)
            # Clusters with discovery start with the lists their sources found first.
            discovery = Discovery()
            engine = discovery.apply(self._document, lambda engine_json: _native.Engine(engine_json, self._workers, self._drain_timeout))
            try:
                self._admin = self._bind_admin(self._document)
            except BaseException:
                discovery.close()
                engine.shutdown(0.0)
                raise
            if self._admin is not None:
                self._admin.start()
            self._engine, self._discovery = engine, discovery
            discovery.follow(engine.set_endpoints)
            self._follow_identity(identity_watcher)
            self._export_spans(self._document)
        return self

    def stop(self, drain_timeout: float | None = None) -> None:
        """Stops within ``drain_timeout`` seconds (default: the one given to the constructor):
        first inbound listeners stop accepting and their open connections finish, while outbound
        listeners keep serving (the app may still call out to finish its requests); then the
        outbound listeners stop and their connections finish. The admin server answers
        meanwhile, ``/ready`` with 503. Reloads are refused from the start. Idempotent."""
        engine = self._engine
        if engine is None:
            return
        with self._lock:
            discovery, self._discovery = self._discovery, None
        if discovery is not None:
            discovery.close()  # before the engine goes: no update after its shutdown
        engine.shutdown(self._drain_timeout if drain_timeout is None else drain_timeout)
        with self._lock:
            if self._engine is engine:
                self._engine = None
            admin, self._admin = self._admin, None
            watcher, self._identity_watcher = self._identity_watcher, None
            exporter, self._span_exporter = self._span_exporter, None
        if watcher is not None:
            watcher.stop()
        if admin is not None:
            admin.stop()
        # After the engine's last requests: their spans go out too.
        if exporter is not None:
            exporter.stop()

    def drain(self) -> None:
        """Starts draining: inbound listeners stop accepting, so new connections to them are
        refused, and their open connections finish the requests in progress (what they still
        have after ``drain_timeout``, TCP connections and tunnels included, is closed); outbound
        listeners keep serving; ``/ready`` answers 503. A reload meanwhile leaves inbound
        listeners closed. ``stop()`` ends it. Idempotent."""
        self._require_engine().drain_inbound()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Proxy:
        return self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        import asyncio  # here: a sidecar never needs it

        # Draining may take seconds: keep the event loop serving meanwhile.
        await asyncio.to_thread(self.stop)

    # --- running -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._engine is not None

    @property
    def draining(self) -> bool:
        """True once ``drain()`` or ``stop()`` has closed the inbound listeners."""
        engine = self._engine
        return engine is not None and engine.draining

    @property
    def unready(self) -> str | None:
        """Why ``/ready`` answers 503 though the proxy runs (see :meth:`hold_ready`); None when it
        does not."""
        if self._engine is None:
            return "not started"
        if self.draining:
            return "draining"
        return self._held

    def hold_ready(self, reason: str | None) -> None:
        """Keeps ``/ready`` at 503, saying ``reason``, until called with None: a sidecar that
        follows a control plane is not ready before its first config arrives."""
        self._held = reason

    @property
    def config(self) -> Config:
        """The config the engine runs now. When the proxy was given an EngineDocument, it is
        validated into a Config on first use (which imports the config schema)."""
        with self._lock:
            if self._config is None:
                from .config import coerce_config

                # An engine document is itself a valid config meaning the same thing.
                self._config = coerce_config(json.loads(self._document.engine_json))
            return self._config

    @property
    def document(self) -> EngineDocument:
        """The engine document the engine runs now (what the admin API serves as ``/config``),
        with the endpoints discovery found in place."""
        discovery = self._discovery
        return self._document if discovery is None else discovery.document(self._document)

    def reload(self, config: ConfigLike | None = None) -> int:
        """Validates ``config`` and swaps it in; returns the new config version. Without
        ``config``, reads it again from the proxy's source (the file it was given). Raises
        :class:`~meshproxy.ConfigError` (or the engine's ``ConfigRejected``/``BindError``, or
        what the source raised) and keeps the running config when the new one is refused; raises
        RuntimeError, counting nothing, when there is nothing to reload. An EngineDocument is not
        validated again here: the engine's findings about one come as ``ConfigRejected``.

        Reloads run one at a time; each outcome is counted in :attr:`reload_outcomes`."""
        self._require_engine()
        read: Callable[[], ConfigLike]
        if config is not None:
            given = config
            read = lambda: given  # noqa: E731
        elif self._source is not None:
            read = self._source
        else:
            raise RuntimeError("nothing to reload from: the proxy was not given a file; pass the new config")
        with self._reloading:
            try:
                version = self._swap(read())
            except Exception:
                self._reload_outcomes["failed"] += 1
                raise
            self._reload_outcomes["succeeded"] += 1
            return version

    @property
    def reload_outcomes(self) -> dict[str, int]:
        """How many reloads succeeded and failed since the proxy was made (a copy)."""
        return dict(self._reload_outcomes)

    def _swap(self, config: ConfigLike) -> int:
        """Validates ``config`` unless it is an EngineDocument, then swaps it in."""
        new_config: Config | None = None
        explain: Explain | None = None
        if isinstance(config, EngineDocument):
            document = config
        else:
            from .config.load import read_config

            # The engine's own check is left to apply, which compiles the config once either way
            # and refuses it with the same findings; they are reported as the loader reports its own.
            new_config, explain = read_config(config)
            document = new_config.engine_document()
        with self._lock:
            engine = self._require_engine()
            admin = self._admin
            # Made before the engine reads the new identity files, started once it runs them.
            identity_moved = document.identity_files != self._document_identity_files()
            identity_watcher = self._identity_watcher_for(document) if identity_moved else None
            moved = document.admin_address != self._document.admin_address
            if moved:
                # A changed admin address is bound before anything else changes, so a bind
                # failure refuses the config as a listener's would.
                admin = self._bind_admin(document)
            try:
                # Through discovery: it puts the discovered endpoint lists in, and restarts the
                # sources whose settings changed.
                version = self._require_discovery().apply(document, engine.apply)
            except BaseException as error:
                if moved and admin is not None:
                    admin.stop()
                if explain is not None and isinstance(error, _native.ConfigRejected):
                    from .config.checks import engine_findings

                    raise explain(engine_findings(error.args[1])) from None
                raise
            retired = self._admin if moved else None
            if moved and admin is not None:
                admin.start()
            self._admin, self._document, self._config = admin, document, new_config
            if identity_moved:
                self._follow_identity(identity_watcher)
            self._export_spans(document)
        if retired is not None:
            retired.stop()
        return version

    # --- credentials ---------------------------------------------------------------------

    def set_identity(self, cert_pem: bytes, key_pem: bytes, bundle_pem: bytes) -> None:
        """Uses new mesh credentials (PEM) for new handshakes; open connections carry on. The
        certificate must name a SPIFFE ID in the running config's trust domain. Raises the
        engine's ``ConfigRejected`` and keeps the current credentials when the set fails its
        checks (key not matching, expired, no SPIFFE ID, not signed by the bundle)."""
        self._require_engine().set_identity(cert_pem, key_pem, bundle_pem)

    def reload_identity(self) -> None:
        """Reads the identity's files again now (the proxy also does so when they change)."""
        self._require_engine().reload_identity()

    def _identity_watcher_for(self, document: EngineDocument) -> IdentityWatcher | None:
        """A watcher of the identity files of ``document`` (None without any), not started yet.
        Made before the engine reads the files: it takes their digests, and reloads them once
        its watch is in place if they changed meanwhile, when no event would tell it."""
        if not document.identity_files or not self._watch_identity:
            return None
        from .identity_watch import IdentityWatcher

        return IdentityWatcher(document.identity_files, self.reload_identity)

    def _follow_identity(self, watcher: IdentityWatcher | None) -> None:
        """Starts ``watcher`` in place of the running one; called under the lock, with the
        engine running the files it watches."""
        if self._identity_watcher is not None:
            self._identity_watcher.stop()
        self._identity_watcher = watcher
        if watcher is not None:
            watcher.start()

    def _export_spans(self, document: EngineDocument) -> None:
        """Starts, retargets or stops the span exporter to match ``document``; called under the
        lock, with the engine running."""
        exporter = self._span_exporter
        if document.tracing is None:
            if exporter is not None:
                self._span_exporter = None
                exporter.stop()
        elif exporter is not None:
            exporter.retarget(document.tracing)
        elif self._engine is not None:
            from .tracing import SpanExporter  # here: it loads the OTLP protobuf modules

            self._span_exporter = SpanExporter(self._engine, document.tracing)
            self._span_exporter.start()

    def _document_identity_files(self) -> tuple[str, ...]:
        watcher = self._identity_watcher
        return watcher.files if watcher is not None else ()

    def listeners(self) -> dict[str, str]:
        """Bound listeners: name → ``"ip:port"`` (the real port when the config said 0)."""
        return dict(self._require_engine().listeners())

    def address(self, listener: str) -> str:
        """The bound ``"ip:port"`` of one listener."""
        try:
            return self.listeners()[listener]
        except KeyError:
            raise KeyError(f"no listener named {listener!r}; listeners: {', '.join(self.listeners())}") from None

    @property
    def admin_address(self) -> str | None:
        """The admin server's bound ``"ip:port"``, or None without one."""
        return self._admin.address if self._admin is not None else None

    def stats(self) -> dict[str, Any]:
        """The engine's counters, read as one snapshot, and the reload outcomes; with the span
        exporter's counts under ``tracing`` (``exported``, ``export_failed``, ``export_retries``)
        when tracing is on."""
        stats: dict[str, Any] = json.loads(self._require_engine().stats_json())
        stats["reload_outcomes"] = self.reload_outcomes
        exporter = self._span_exporter
        if exporter is not None:
            stats.setdefault("tracing", {}).update(exporter.stats())
        return stats

    def metrics(self) -> bytes:
        """The engine's counters in the Prometheus text format (what the admin API serves as
        ``/metrics``), read as one snapshot. The first call imports prometheus_client."""
        with self._lock:
            if self._metrics is None:
                from .metrics import ProxyMetrics

                self._metrics = ProxyMetrics(self)
            metrics = self._metrics
        return metrics.exposition()

    def clusters(self) -> dict[str, Any]:
        """The running clusters by name: policy, upstream protocol, and each endpoint with its
        weight and live state (requests in flight, latency estimate, pooled connections)."""
        clusters: dict[str, Any] = json.loads(self._require_engine().clusters_json())
        return clusters

    def routes(self) -> dict[str, Any]:
        """The running routes by listener, in the order they are tried (see ``routes.py``)."""
        from .routes import routes_by_listener

        return routes_by_listener(self._document)

    @property
    def version(self) -> int:
        """How many configs the engine has applied (1 after start)."""
        return self._require_engine().version

    def _bind_admin(self, document: EngineDocument) -> AdminServer | None:
        """Binds the admin address of ``document`` (not serving yet), or None without one."""
        return AdminServer(document.admin_address, self) if document.admin_address is not None else None

    def _require_discovery(self) -> Discovery:
        discovery = self._discovery
        if discovery is None:
            raise RuntimeError("the proxy is not running; call start() first")
        return discovery

    def _require_engine(self) -> _native.Engine:
        engine = self._engine
        if engine is None:
            raise RuntimeError("the proxy is not running; call start() first")
        return engine
