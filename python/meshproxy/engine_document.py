"""A validated config in the form a running proxy keeps: the engine document (the JSON
:meth:`Config.engine_json` gives) plus the little the Python side reads from the config —
the admin address, each listener's protocol, the files to watch and the discovery settings
of clusters whose endpoints a source finds — with no schema behind it.

``meshproxy run`` validates every config file it loads in a short-lived child process
(``meshproxy validate --engine-document FILE``), which prints this as JSON; the sidecar itself
never imports the schema or pydantic, and stays small for as long as it runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple


class TracingExport(NamedTuple):
    """Where the Python layer sends the engine's finished spans: the config's ``tracing``
    section, less the sampling ratio the engine applies itself."""

    otlp_endpoint: str
    service_name: str


# A NamedTuple rather than a dataclass: `dataclasses` imports `inspect` and `ast`, a megabyte the
# sidecar has no other use for.
class EngineDocument(NamedTuple):
    """Build one with :meth:`Config.engine_document` (from a validated config) or
    :meth:`from_json` (from what ``meshproxy validate --engine-document`` printed)."""

    engine_json: str
    """The document the engine deserializes; also what the admin API serves as ``/config``."""
    admin_address: str | None
    """``IP:PORT`` of the admin server, or None without one."""
    listener_protocols: Mapping[str, str]
    """Listener name → its downstream protocol (``auto``, ``http1``, ``http2``)."""
    source: str | None = None
    """Where the config was loaded from, for messages: a file path, "<string>" or "<dict>"."""
    identity_files: tuple[str, ...] = ()
    """The identity section's cert, key and bundle files, watched for rotation; empty without one."""
    discovery: Mapping[str, Mapping[str, Any]] = {}
    """Cluster name → its ``discovery`` settings as in the engine document, for each cluster
    whose endpoints a source finds; empty when every cluster lists its own."""
    tracing: TracingExport | None = None
    """Where spans are exported; None without a ``tracing`` section."""

    def to_json(self) -> str:
        return json.dumps({
            "engine_json": self.engine_json,
            "admin_address": self.admin_address,
            "listener_protocols": dict(self.listener_protocols),
            "source": self.source,
            "identity_files": list(self.identity_files),
            "discovery": dict(self.discovery),
            "tracing": list(self.tracing) if self.tracing is not None else None,
        })

    @classmethod
    def from_json(cls, text: str) -> EngineDocument:
        """The inverse of :meth:`to_json`. Raises ValueError when ``text`` is not one."""
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("engine_json"), str):
            raise ValueError("expected a JSON object with the engine document as 'engine_json'")
        data["identity_files"] = tuple(data.get("identity_files", ()))
        data.setdefault("discovery", {})
        try:
            tracing = data.get("tracing")
            data["tracing"] = TracingExport(*tracing) if tracing is not None else None
            return cls(**data)
        except TypeError as error:
            raise ValueError(str(error)) from None
