"""Transparent capture in the config schema: a listener that reads where each connection was
going before `meshproxy capture`'s rules redirected it (`original_destination: true`), and the
route match on that address (`match.original_destination`). The value rule is the engine's
(`_native.check_original_destination`), so both layers accept the same entries.
"""

from __future__ import annotations

from operator import attrgetter
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator, Field

from .. import _native
from .messages import invalid, show

if TYPE_CHECKING:
    from .clusters import Cluster
    from .routes import Route


def _destination(value: str) -> str:
    try:
        _native.check_original_destination(value)
    except ValueError as error:
        raise invalid(f"{show(value)} {error}") from None
    return value


OriginalDestination = Annotated[str, AfterValidator(_destination)]
OriginalDestinations = Annotated[list[OriginalDestination], Field(min_length=1)] | None


_MATCHED_DESTINATION = attrgetter("match_.original_destination")


def check_capture_routes(original_destination: bool, routes: list[Route]) -> None:
    """A route that matches on the original destination needs a listener that reads it."""
    # Read in C, without a Python step per route: a mesh's listeners have thousands.
    if original_destination or not any(map(_MATCHED_DESTINATION, routes)):
        return
    for i, route in enumerate(routes):
        if route.match_.original_destination is not None:
            raise invalid(
                "needs the listener's original_destination: true (only a capture listener knows "
                "where its connections were going)",
                at=("routes", i, "match", "original_destination"),
            )


def check_passthrough(cluster: Cluster) -> None:
    """A cluster sending to original destinations has no endpoints of its own, nor anything to
    check or secure them with."""
    if not cluster.original_destination:
        return
    given = {"endpoints": len(cluster.endpoints) > 0, "discovery": cluster.discovery is not None,
             "health_check": cluster.health_check is not None, "tls": cluster.tls.mode != "disable"}
    for key in (key for key, present in given.items() if present):
        raise invalid("a cluster with original_destination: true sends each request where its connection was "
                      "going; remove this", at=(key,))
