"""Where callers reach a ``tcp`` Service: on their own sidecar's outbound address (its IP), at the
Service's ``port``, or at the sidecar's outbound port plus the Service's ``port_offset``.

A ``port_offset`` left out is given once, when the Service is first applied as ``tcp``: the
lowest offset no other TCP service holds, kept in the stored Service from then on, so adding or
deleting other services never moves it (a port callers' apps are configured with). A Service
stored before offsets were kept has none: it is read as having the lowest offsets the others
leave free, in (namespace, name) order (as every port was once given), until an apply stores it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any

MAX_PORT_OFFSET = 1000
"""The highest ``port_offset``: the ports after a sidecar's outbound port that TCP services may take."""

ServiceKey = tuple[str, str]
"""(name, namespace)."""


def is_tcp(resource: Mapping[str, Any] | None) -> bool:
    return resource is not None and resource.get("kind") == "Service" and resource.get("protocol") == "tcp"


def unplaced(resource: Mapping[str, Any]) -> bool:
    """A tcp Service with neither ``port`` nor ``port_offset``: one to give an offset to."""
    return is_tcp(resource) and resource.get("port") is None and resource.get("port_offset") is None


def free_offsets(taken: Collection[int]) -> Iterator[int]:
    """The offsets not in ``taken``, lowest first."""
    return (offset for offset in range(1, MAX_PORT_OFFSET + 1) if offset not in taken)


def offsets_for(services: Iterable[Mapping[str, Any]], first: Iterable[ServiceKey] = ()) -> dict[ServiceKey, int]:
    """The ``port_offset`` each unplaced tcp Service of ``services`` gets: the lowest ones the
    others leave free, to those named in ``first`` first (in that order), then to the rest in
    (namespace, name) order. More unplaced services than free offsets: the last get none."""
    services = list(services)
    taken = {int(s["port_offset"]) for s in services if is_tcp(s) and s.get("port_offset") is not None}
    waiting = {(s["name"], s["namespace"]) for s in services if unplaced(s)}
    ordered = [key for key in first if key in waiting]
    ordered += sorted(waiting - set(ordered), key=lambda key: (key[1], key[0]))
    return dict(zip(ordered, free_offsets(taken)))


def listener_address(service: Mapping[str, Any], offset: int | None, outbound: str) -> str | None:
    """Where a caller whose sidecar's outbound address is ``outbound`` reaches ``service``:
    its ``port``, or the outbound port plus its offset (``offset`` when it has none stored);
    None when that falls past the last port."""
    host, _, outbound_port = outbound.rpartition(":")
    port = service.get("port")
    if port is None:
        given = service.get("port_offset") if service.get("port_offset") is not None else offset
        if given is None:
            return None
        port = int(outbound_port) + int(given)
    return f"{host}:{port}" if int(port) <= 65535 else None
