"""Socket addresses as written in config: listeners bind ``IP:PORT``, endpoints connect to
``HOST:PORT``. The rules are the engine's (``meshproxy_config::address``); each parser returns
a normalized key so "same address" checks compare what the kernel would compare (``[::1]`` and
``[0:0::1]`` are one address), and raises a message that says what would be valid.

Outside the config package so that a sidecar can check the endpoint lists discovery finds
without loading the config schema (pydantic); the schema's fields wrap :class:`AddressError`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from . import _native

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAX_SHOWN = 60


class AddressError(ValueError):
    """An address that does not parse; the message says what would be valid."""


def parse_listen_address(text: str) -> tuple[IPAddress, int]:
    """``127.0.0.1:15001`` or ``[::1]:15001`` as ``(ip, port)``; port 0 asks the OS for an
    ephemeral port."""
    ip, port = _parse(_native.parse_listen_address, text)
    return ipaddress.ip_address(ip), port


def parse_endpoint_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` where HOST is an IPv4 literal, a bracketed IPv6 literal or a DNS name, as
    ``(host, port)``: IPs in canonical form, names lowercased."""
    return _parse(_native.parse_endpoint_address, text)


def _parse(rule: Callable[[str], tuple[str, int]], text: str) -> tuple[str, int]:
    try:
        return rule(text)
    except ValueError as problem:
        raise AddressError(f"{_show(text)} is not a valid address; {problem}") from None


def _show(text: str) -> str:
    """A value quoted for a message, kept short (as the config's messages quote values)."""
    quoted = repr(text)
    return quoted if len(quoted) <= _MAX_SHOWN else quoted[: _MAX_SHOWN - 3] + "..."
