"""What a load run is pointed at: a proxy under test, a pair of mesh sidecars, or the upstream
directly."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from .servers import Server


class Route(Enum):
    """Downstream protocol -> upstream protocol. Every proxy has one listener per route of
    SIDECAR_ROUTES; MTLS is a mesh sidecar's inbound listener, loaded with handshakes alone."""

    H1_H1 = "h1_h1"
    H2C_H1 = "h2c_h1"
    H2C_H2C = "h2c_h2c"
    # Opaque TCP to the HTTP/1.1 upstream: the proxy copies bytes, wrk's requests go through.
    TCP = "tcp"
    MTLS = "mtls"

    @property
    def downstream_h2c(self) -> bool:
        return self in (Route.H2C_H1, Route.H2C_H2C)


SIDECAR_ROUTES = (Route.H1_H1, Route.H2C_H1, Route.H2C_H2C, Route.TCP)


@dataclass(frozen=True)
class ClientCredentials:
    """What a client presents to a mutual-TLS listener, and the CA it checks the server with."""

    cert: Path
    key: Path
    ca: Path


@dataclass
class Target:
    """`ports` has a port for each route the target serves; `unsupported` says why it serves
    the others not. `servers` are the processes whose CPU and memory count as the target's: one
    proxy, both sidecars of a mesh pair, or none for a `direct` target (the upstream itself:
    nothing to measure but the load's own figures). `client` is what a load presents to an
    MTLS port. `broken` holds why the target failed to start or to forward."""

    name: str
    ports: dict[Route, int]
    unsupported: dict[Route, str] = field(default_factory=dict)
    direct: bool = False
    servers: tuple[Server, ...] = ()
    client: ClientCredentials | None = None
    broken: str | None = None

    def running(self) -> bool:
        return all(server.running() for server in self.servers)

    def log_tails(self) -> str:
        """The last lines of each server's log, under its name."""
        return "\n".join(f"{server.name}'s log:\n{server.log_tail()}" for server in self.servers)
