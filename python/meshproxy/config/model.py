"""The config schema: one pydantic model per config section, field names exactly as written
in YAML and as read by the engine (one name per concept). The sections live by topic in
``settings`` (sidecar-wide), ``routes``, ``listeners`` and ``clusters``, on the base in
``section``; every model is importable from here.

Rules that involve one section only (exactly one of cluster/split, route names unique within
a listener) live with the models as model validators, so every Config instance satisfies
them. Value rules (durations, limits, SPIFFE IDs) are the engine's, called through
``_native``. Rules that reach across sections (a route naming a cluster) live in
:mod:`.checks`.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, Field, ModelWrapValidatorHandler, PrivateAttr, model_validator

from ..engine_document import EngineDocument, TracingExport
from .clusters import Cluster, ClusterTls, Discovery, Endpoint
from .duration import FineDuration
from .listeners import AuthzPolicy, AuthzRule, Listener
from .routes import _KEPT_ROUTES, HeaderEdits, Route, RouteMatch, WeightedCluster
from .section import HeaderMatch, HeaderMatches, Methods, Weight, _empty, _Section, _with_key
from .settings import MAX_BUSY_POLL, STDOUT, AccessLog, Admin, Identity, Limits, Tracing, _busy_poll_window

__all__ = [
    "MAX_BUSY_POLL",
    "STDOUT",
    "AccessLog",
    "Admin",
    "AuthzPolicy",
    "AuthzRule",
    "Cluster",
    "ClusterTls",
    "Config",
    "Discovery",
    "Endpoint",
    "HeaderEdits",
    "HeaderMatch",
    "HeaderMatches",
    "Identity",
    "Limits",
    "Listener",
    "Methods",
    "Route",
    "RouteMatch",
    "Tracing",
    "Weight",
    "WeightedCluster",
]


class Config(_Section):
    """One complete, validated sidecar config: the snapshot the engine runs on."""

    workers: Annotated[int, Field(ge=1)] | None = None
    """Engine worker threads; null means one per core."""
    busy_poll: Annotated[FineDuration, AfterValidator(_busy_poll_window)] = timedelta(0)
    """How long a worker keeps polling its sockets after its last event before it sleeps (e.g.
    300us): less latency per hop on virtual machines, for the CPU it spins with. 0: off."""
    admin: Admin | None = None
    limits: Limits = Field(default_factory=Limits)
    identity: Identity | None = None
    access_log: AccessLog | None = None
    tracing: Tracing | None = None
    listeners: list[Listener] = Field(min_length=1)
    clusters: list[Cluster] = _empty(list)

    _source: str | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _keeping_routes(cls, data: Any, handler: ModelWrapValidatorHandler[Config]) -> Config:
        with _KEPT_ROUTES.validation():
            return handler(data)

    @property
    def source(self) -> str | None:
        """Where this config was loaded from: a file path, "<string>" or "<dict>"."""
        return self._source

    def with_files_under(self, folder: str) -> Config:
        """This config with every relative file path it names (identity, cluster CAs, endpoint
        files of discovery, the access log) made absolute under ``folder``: a config file names
        files relative to itself, while the engine reads them from wherever the sidecar runs."""
        def under(path: str) -> str:
            return os.path.normpath(os.path.join(folder, path))

        def cluster_under(cluster: Cluster) -> Cluster:
            update: dict[str, Any] = {}
            if cluster.tls.ca is not None:
                update["tls"] = cluster.tls.model_copy(update={"ca": under(cluster.tls.ca)})
            if cluster.discovery is not None and cluster.discovery.path is not None:
                update["discovery"] = cluster.discovery.model_copy(update={"path": under(cluster.discovery.path)})
            return cluster.model_copy(update=update) if update else cluster

        update: dict[str, Any] = {}
        if self.identity is not None:
            update["identity"] = self.identity.model_copy(
                update={key: under(getattr(self.identity, key)) for key in ("cert", "key", "bundle")}
            )
        if any(cluster.tls.ca is not None or cluster.discovery is not None for cluster in self.clusters):
            update["clusters"] = [cluster_under(cluster) for cluster in self.clusters]
        if self.access_log is not None and self.access_log.path != STDOUT:
            update["access_log"] = self.access_log.model_copy(update={"path": under(self.access_log.path)})
        if not update:
            return self
        copy = self.model_copy(update=update)
        copy._source = self._source
        return copy

    def engine_json(self) -> str:
        """The document the engine deserializes: every default present, durations as
        "NNNms", header matches in object form, methods as lists.

        The text is canonical: keys in schema order and mappings sorted by key (validation
        sorts them), so two configs that mean the same thing give the same string, which is
        how a reload tells "changed" from "rewritten". Written by pydantic's serializer, with
        each cluster's endpoints as the bulk reader wrote them and each route kept from the
        config validated last as it was written then."""
        listeners = ",".join(listener.engine_json() for listener in self.listeners)
        clusters = ",".join(cluster.engine_json() for cluster in self.clusters)
        document = _with_key(self.model_dump_json(exclude={"listeners", "clusters"}), "listeners", f"[{listeners}]")
        return _with_key(document, "clusters", f"[{clusters}]")

    def engine_document(self) -> EngineDocument:
        """The engine document with what a running proxy reads beside it (admin address,
        listener protocols): all a :class:`~meshproxy.Proxy` needs, without the schema."""
        return EngineDocument(
            engine_json=self.engine_json(),
            admin_address=self.admin.address if self.admin is not None else None,
            listener_protocols={listener.name: listener.protocol for listener in self.listeners},
            source=self.source,
            identity_files=(self.identity.cert, self.identity.key, self.identity.bundle) if self.identity else (),
            discovery={
                cluster.name: cluster.discovery.model_dump(mode="json")
                for cluster in self.clusters
                if cluster.discovery is not None
            },
            tracing=TracingExport(self.tracing.otlp_endpoint, self.tracing.service_name) if self.tracing else None,
        )
