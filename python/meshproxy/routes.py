"""The routes of the running config as the admin API lists them (``GET /routes``): per listener,
in the order they are tried, each with its name (as stats label it), the conditions of its match
and where it sends requests.

Read from the engine document the engine runs, not from the engine: routes change only with the
config, and the document names them exactly as the config did.
"""

from __future__ import annotations

import json
from typing import Any

from .engine_document import EngineDocument


def routes_by_listener(document: EngineDocument) -> dict[str, Any]:
    """``{listener: {"direction": ..., "routes": [{"name", "match", "cluster" | "split" | "redirect" | "direct_response"}]}}``."""
    config = json.loads(document.engine_json)
    return {
        listener["name"]: {
            "direction": listener.get("direction", "outbound"),
            "routes": [_route(listener["name"], index, route) for index, route in enumerate(listener.get("routes", []))],
        }
        for listener in config.get("listeners", [])
    }


def _route(listener: str, index: int, route: dict[str, Any]) -> dict[str, Any]:
    # The engine's name for an unnamed route, the label its stats carry.
    shown: dict[str, Any] = {"name": route.get("name") or f"{listener}/{index}", "match": _given(route.get("match"))}
    answer = next((key for key in ("redirect", "direct_response") if route.get(key) is not None), None)
    if answer is not None:
        # Answered by the proxy itself: no cluster.
        shown[answer] = route[answer]
    elif route.get("split") is not None:
        shown["split"] = [{"cluster": entry["cluster"], "weight": entry["weight"]} for entry in route["split"]]
    else:
        shown["cluster"] = route.get("cluster")
    return shown


def _given(match: dict[str, Any] | None) -> dict[str, Any]:
    """The conditions a match sets; the document spells out the unset ones as null, empty or
    false (`connect`), which all mean 'any' (or 'not a CONNECT')."""
    return {key: value for key, value in (match or {}).items() if value is not False and value not in (None, {}, [])}
