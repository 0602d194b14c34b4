"""Applying what the control plane sends, through the reload path a config file takes: the
translated config is written to the state folder, checked by the same validator child
(``meshproxy validate --engine-document``), then swapped in with ``Proxy.reload``. A refusal at
any step leaves the running config in place and becomes the NACK's message. What applied is kept
as the state folder's config.json: the config a restart runs before the control plane answers.

An update that changes nothing but endpoint lists (instances joining or leaving: the usual
push) skips the validator: the lists are put into the running engine document and reloaded,
and the engine checks them as it compiles (the lists come from translate.endpoints, which reads
socket addresses and drops repeats, as the schema would have it).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .state import StateDir
from .translate import Local, Resources, translate
from .translate_base import Refused

if TYPE_CHECKING:
    from ..engine_document import EngineDocument
    from ..proxy import Proxy

# Validates a config file as `meshproxy run` does (in a child); raises ValueError with the report.
Validate = Callable[[Path], "EngineDocument"]


class Applier:
    """Applies translated configs and CA bundles to one running proxy, one at a time."""

    def __init__(self, proxy: Proxy, state: StateDir, local: Local, validate: Validate,
                 running: dict[str, Any]) -> None:
        self.proxy = proxy
        self.state = state
        self.local = local
        self.validate = validate
        self.running = running
        """The sidecar config the engine runs (as translated), to tell a change from a resend."""
        self._lock = threading.Lock()

    def apply(self, resources: Resources) -> int | None:
        """Applies the config ``resources`` translate to; returns the new config version, or
        None when it is the running one. Raises Refused with the message for the NACK."""
        config = translate(resources, self.local)
        with self._lock:
            if config == self.running:
                return None
            if _without_endpoints(config) == _without_endpoints(self.running):
                version = self._swap_endpoints(config)
            else:
                version = self._reload(config)
            self.running = config
            self.proxy.hold_ready(None)
            return version

    def _reload(self, config: dict[str, Any]) -> int:
        from ..reloads import refusal_message

        path = self.state.write_next_config(config)
        try:
            document = self.validate(path)
        except ValueError as refusal:
            raise Refused(str(refusal)) from None
        # Named after the file it will be kept as, which `meshproxy validate` reads alike.
        document = document._replace(source=str(self.state.config))
        try:
            version = self.proxy.reload(document)
        except Exception as error:  # noqa: BLE001 (whatever the engine says, the running config stays)
            raise Refused(refusal_message(error, str(path))) from None
        self.state.keep_next_config()
        return version

    def _swap_endpoints(self, config: dict[str, Any]) -> int:
        from ..reloads import refusal_message

        lists = {cluster["name"]: cluster.get("endpoints", []) for cluster in config["clusters"]}
        document = self.proxy.document
        engine = json.loads(document.engine_json)
        for cluster in engine["clusters"]:
            if cluster["name"] in lists:
                cluster["endpoints"] = [{"address": e["address"], "weight": e.get("weight", 1)}
                                        for e in lists[cluster["name"]]]
        try:
            version = self.proxy.reload(document._replace(engine_json=json.dumps(engine, separators=(",", ":"))))
        except Exception as error:  # noqa: BLE001
            raise Refused(refusal_message(error, str(self.state.config))) from None
        self.state.save_config(config)
        return version

    def apply_bundle(self, bundle_pem: bytes) -> bool:
        """Uses a new CA bundle (SDS ROOTCA) for new handshakes; False when it is the one in use.
        Raises Refused, putting the bundle in use back, when the engine refuses it."""
        with self._lock:
            try:
                previous: bytes | None = self.state.bundle.read_bytes()
            except OSError:
                previous = None
            if not self.state.save_bundle(bundle_pem):
                return False
            try:
                self.proxy.reload_identity()
            except ValueError as error:  # the engine's ConfigRejected
                if previous is not None:
                    self.state.save_bundle(previous)
                raise Refused(f"CA bundle refused: {error.args[0] if error.args else error}") from None
            return True

    def reload_identity(self) -> None:
        """Has the engine read the credential files again (after a renewal wrote them)."""
        with self._lock:
            self.proxy.reload_identity()


def _without_endpoints(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, "clusters": [{k: v for k, v in c.items() if k != "endpoints"} for c in config["clusters"]]}
