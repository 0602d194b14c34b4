"""What the control plane keeps, as an interface: SQLite (:mod:`.sqlite`) is the default
backend; a distributed one (etcd) is another class with these methods.

Resources are the validated documents (``kind``, their keys, defaults filled in) as plain
dicts; each is keyed by ``(kind, namespace, name)``, where a Route's, an AccessPolicy's and a
TrafficPolicy's name is their ``service`` and the Mesh's is ``("Mesh", "", "mesh")``. Every change makes a revision
that holds the whole set, so a rollback is a revision.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

Resource = dict[str, Any]
Key = tuple[str, str, str]


class Revision(NamedTuple):
    number: int
    time: float
    """Seconds since the epoch."""
    message: str
    """What made it: ``apply mesh.yaml: Route shop/orders, Service shop/orders``, ``delete ...``,
    ``rollback to 3``."""


class TokenRecord(NamedTuple):
    id: str
    digest: str
    """``join_token.secret_digest`` of the secret; the secret itself is never stored."""
    service: str
    namespace: str
    expires: int
    revoked: bool
    created: int


class InstanceRecord(NamedTuple):
    """A registered instance, kept so a restarted control plane serves the endpoints it knew
    (each under a fresh lease) until their sidecars reconnect or the lease runs out."""

    node_id: str
    service: str
    namespace: str
    version: str
    address: str
    admin: str
    app_port: int = 0
    """Where a captured client reaches the app: this instance's IP and this port; 0: unknown
    (a record kept before the control plane learnt app ports)."""


class Store(ABC):
    # --- resources and revisions ------------------------------------------------------
    @abstractmethod
    def resources(self) -> list[Resource]:
        """The current set, in a stable order (kind, namespace, name)."""

    @abstractmethod
    def apply(self, documents: Sequence[Resource], message: str) -> int:
        """Creates or replaces every document at once; returns the new revision. Documents equal
        to the stored ones change nothing: with nothing changed, returns the current revision."""

    @abstractmethod
    def delete(self, key: Key, message: str) -> int:
        """Removes one resource; returns the new revision. KeyError when it does not exist."""

    @abstractmethod
    def revision(self) -> int:
        """The current revision (0 before the first change)."""

    @abstractmethod
    def history(self) -> list[Revision]:
        """Every revision, oldest first."""

    @abstractmethod
    def resources_at(self, revision: int) -> list[Resource]:
        """The set as it was at ``revision``. KeyError for a revision that does not exist."""

    @abstractmethod
    def rollback(self, revision: int) -> int:
        """Makes the set of ``revision`` current again, as a new revision; returns it."""

    # --- xDS versions -----------------------------------------------------------------
    @abstractmethod
    def next_version(self) -> int:
        """A version number greater than any this store gave before, restarts included."""

    # --- join tokens ------------------------------------------------------------------
    @abstractmethod
    def add_token(self, record: TokenRecord) -> None: ...

    @abstractmethod
    def token(self, token_id: str) -> TokenRecord | None: ...

    @abstractmethod
    def tokens(self) -> list[TokenRecord]: ...

    @abstractmethod
    def revoke_token(self, token_id: str) -> None:
        """KeyError for an unknown id."""

    # --- the CA -----------------------------------------------------------------------
    @abstractmethod
    def ca(self) -> tuple[bytes, bytes] | None:
        """(certificate PEM, key PEM) of the CA, or None before one was made."""

    @abstractmethod
    def set_ca(self, cert_pem: bytes, key_pem: bytes) -> None: ...

    # --- instances ----------------------------------------------------------------------
    @abstractmethod
    def instances(self) -> list[InstanceRecord]: ...

    @abstractmethod
    def put_instance(self, record: InstanceRecord) -> None: ...

    @abstractmethod
    def remove_instance(self, node_id: str) -> None: ...

    # --- changes ------------------------------------------------------------------------
    @abstractmethod
    def on_change(self, callback: Callable[[int], None]) -> None:
        """Calls ``callback(revision)`` after every change of the resources, from the thread
        that made it (for this replica's changes; a distributed store also calls it for the
        changes of others)."""

    @abstractmethod
    def close(self) -> None: ...
