"""How a stored resource is addressed: its key ``(kind, namespace, name)`` (a Route's, an
AccessPolicy's and a TrafficPolicy's name is the service they are about; the Mesh is
``("Mesh", "", "mesh")``), and how a message names it (``Route shop/orders``)."""

from __future__ import annotations

from typing import Any

Key = tuple[str, str, str]
MESH_KEY: Key = ("Mesh", "", "mesh")
# The key field of each kind: what `meshctl delete KIND NAME` names.
NAME_FIELD = {"Service": "name", "Route": "service", "AccessPolicy": "service", "TrafficPolicy": "service"}


def key_of(resource: dict[str, Any]) -> Key:
    kind = resource["kind"]
    if kind == "Mesh":
        return MESH_KEY
    return kind, resource["namespace"], resource[NAME_FIELD[kind]]


def label(key: Key) -> str:
    kind, namespace, name = key
    return kind if kind == "Mesh" else f"{kind} {namespace}/{name}"
