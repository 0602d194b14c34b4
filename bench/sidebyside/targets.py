"""What a load run is pointed at: a proxy under test, or the upstream directly."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .servers import Server


class Route(Enum):
    """Downstream protocol -> upstream protocol. Every proxy has one listener per route."""

    H1_H1 = "h1_h1"
    H2C_H1 = "h2c_h1"
    H2C_H2C = "h2c_h2c"

    @property
    def downstream_h2c(self) -> bool:
        return self is not Route.H1_H1


@dataclass
class Target:
    """`ports` has a port for each route the target serves; `unsupported` says why it serves
    the others not. `direct` targets are the upstream itself: no proxy, nothing to measure but
    the load's own figures. `broken` holds why a proxy failed to start or to forward."""

    name: str
    ports: dict[Route, int]
    unsupported: dict[Route, str] = field(default_factory=dict)
    direct: bool = False
    server: Server | None = None
    broken: str | None = None
