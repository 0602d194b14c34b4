"""CONNECT routes, for clients told HTTPS_PROXY=http://<listener>: what a route's match adds to
say which tunnels it allows (see docs/protocols-websocket-and-connect.md). Upgrades
(WebSocket) need no key."""

from __future__ import annotations

from typing import Annotated, Protocol

from pydantic import Field

from .messages import invalid

Port = Annotated[int, Field(ge=1, le=65535)]


class _PathMatch(Protocol):
    @property
    def path(self) -> str | None: ...
    @property
    def path_prefix(self) -> str | None: ...
    @property
    def path_regex(self) -> str | None: ...


def check_connect_match(match: _PathMatch) -> None:
    """A CONNECT has no path: a connect match with a path condition would match nothing. (The
    control plane's Route match shares the rule that calls this, without `connect`.)"""
    if getattr(match, "connect", False) and (match.path, match.path_prefix, match.path_regex) != (None, None, None):
        raise invalid("a CONNECT has no path: give host and ports with connect, not a path condition")
