"""The embedding API: run the proxy inside a Python process.

    async with Proxy("sidecar.yaml") as proxy:     # or Proxy(dict) / Proxy(Config) / Proxy(EngineDocument)
        proxy.address("outbound")                   # "127.0.0.1:15001"
        proxy.reload(new_config)                    # validate, compile, swap; keeps the old on error
        proxy.stats()                               # engine counters

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

ConfigLike: TypeAlias = "Config | dict[str, Any] | str | os.PathLike[str] | EngineDocument"


class Proxy:
    """A meshproxy data path plus its admin server, configured by one config document."""

    def __init__(self, config: ConfigLike, *, workers: int | None = None, drain_timeout: float = 10.0) -> None:
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
        self._drain_timeout = drain_timeout
        self._engine: _native.Engine | None = None
        self._admin: AdminServer | None = None
        self._identity_watcher: IdentityWatcher | None = None
        self._discovery: Discovery | None = None
        self._lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> Proxy:
        """Starts the engine, binds every listener, then the admin server. Returns at once."""
        with self._lock:
            if self._engine is not None:
                raise RuntimeError("the proxy is already running")
            # Clusters with discovery start with the lists their sources found first.
            discovery = Discovery()
            engine = discovery.apply(self._document, lambda engine_json: _native.Engine(engine_json, self._workers))
            try:
                self._admin = self._bind_admin(self._document)
            except BaseException:
                discovery.close()
                engine.shutdown(0.0)
                raise
            if self._admin is not None:
                self._admin.start()
            self._engine, self._discovery = engine, discovery
            discovery.follow(engine.apply)
            self._watch_identity(self._document)
        return self

    def stop(self, drain_timeout: float | None = None) -> None:
        """Stops accepting connections and lets open ones finish for up to ``drain_timeout``
        seconds (default: the one given to the constructor). Idempotent."""
        with self._lock:
            engine, self._engine = self._engine, None
            admin, self._admin = self._admin, None
            watcher, self._identity_watcher = self._identity_watcher, None
            discovery, self._discovery = self._discovery, None
        if watcher is not None:
            watcher.stop()
        if discovery is not None:
            discovery.close()  # before the engine goes: no update after its shutdown
        if admin is not None:
            admin.stop()
        if engine is not None:
            engine.shutdown(self._drain_timeout if drain_timeout is None else drain_timeout)

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

    def reload(self, config: ConfigLike) -> int:
        """Validates ``config`` and swaps it in; returns the new config version. Raises
        :class:`~meshproxy.ConfigError` (or the engine's ``ConfigRejected``/``BindError``)
        and keeps the running config when the new one is refused. An EngineDocument is not
        validated again here: the engine's findings about one come as ``ConfigRejected``."""
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
            if document.identity_files != self._document_identity_files():
                self._watch_identity(document)
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

    def _watch_identity(self, document: EngineDocument) -> None:
        """Follows the identity files of ``document``; called under the lock."""
        if self._identity_watcher is not None:
            self._identity_watcher.stop()
            self._identity_watcher = None
        if document.identity_files:
            from .identity_watch import IdentityWatcher

            self._identity_watcher = IdentityWatcher(document.identity_files, self.reload_identity)
            self._identity_watcher.start()

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
        """The engine's counters, read as one snapshot."""
        stats: dict[str, Any] = json.loads(self._require_engine().stats_json())
        return stats

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
