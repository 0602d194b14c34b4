"""Socket addresses as written in config: listeners bind ``IP:PORT``, endpoints connect to
``HOST:PORT``. Each parser returns a normalized key so "same address" checks compare what the
kernel would compare (``[::1]`` and ``[0:0::1]`` are one address), and raises a message that
says what would be valid.

Outside the config package so that a sidecar can check the endpoint lists discovery finds
without loading the config schema (pydantic); the schema's fields wrap :class:`AddressError`.
"""

from __future__ import annotations

import ipaddress
import re


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_PORT = re.compile(r"^\d{1,5}$")
# A DNS name: dot-separated labels of letters, digits and inner hyphens; a trailing dot (a
# fully qualified name, which skips resolver search domains) is allowed.
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_LOOKS_NUMERIC = re.compile(r"^[0-9.]+$")

LISTEN_EXAMPLE = "expected IP:PORT, e.g. 127.0.0.1:15001"
ENDPOINT_EXAMPLE = "expected HOST:PORT, e.g. 127.0.0.1:8081, [::1]:8081 or orders.internal:8081"
_MAX_SHOWN = 60


class AddressError(ValueError):
    """An address that does not parse; the message says what would be valid."""


def parse_listen_address(text: str) -> tuple[IPAddress, int]:
    """``127.0.0.1:15001`` or ``[::1]:15001``; port 0 asks the OS for an ephemeral port."""
    parts = _split(text)
    if parts is None:
        raise AddressError(f"{_show(text)} is not a valid address; {_split_hint(text, LISTEN_EXAMPLE)}")
    host, bracketed, port_text = parts
    ip = _parse_ip(host, bracketed)
    if ip is None:
        if bracketed or _LOOKS_NUMERIC.match(host):
            raise AddressError(f"{_show(text)} is not a valid address; {_show(host)} is not an IP address")
        # Listeners bind before any resolver is consulted, so a name is never right here.
        raise AddressError(
            f"{_show(text)} is not a valid address; a listener binds an IP, "
            "e.g. 127.0.0.1:15001 or [::1]:15001, not a host name"
        )
    return ip, _parse_port(text, port_text, lowest=0)


def parse_endpoint_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` where HOST is an IPv4 literal, a bracketed IPv6 literal or a DNS name.
    The key is (normalized host, port): IPs in canonical form, names lowercased."""
    parts = _split(text)
    if parts is None:
        raise AddressError(f"{_show(text)} is not a valid address; {_split_hint(text, ENDPOINT_EXAMPLE)}")
    host, bracketed, port_text = parts
    ip = _parse_ip(host, bracketed)
    if ip is not None:
        key = f"[{ip}]" if ip.version == 6 else str(ip)
    elif bracketed or _LOOKS_NUMERIC.match(host):
        # All digits and dots reads as an IPv4 literal to a resolver, so it must be one.
        raise AddressError(f"{_show(text)} is not a valid address; {_show(host)} is not an IP address")
    elif _is_dns_name(host):
        key = host.lower().rstrip(".")
    else:
        raise AddressError(
            f"{_show(text)} is not a valid address; {_show(host)} is not a valid host name "
            "(letters, digits, hyphens and dots)"
        )
    return key, _parse_port(text, port_text, lowest=1)


def _split(text: str) -> tuple[str, bool, str] | None:
    """(host, bracketed, port text), or None when there is no ``:PORT`` part."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1 : close + 2] != ":":
            return None
        return text[1:close], True, text[close + 2 :]
    host, sep, port = text.rpartition(":")
    if not sep or not host or ":" in host:
        return None
    return host, False, port


def _split_hint(text: str, example: str) -> str:
    if text.count(":") > 1 and not text.startswith("["):
        return f"{example} (an IPv6 address goes in brackets: [::1]:15001)"
    return example


def _parse_ip(host: str, bracketed: bool) -> IPAddress | None:
    try:
        if bracketed:
            # Zone ids (fe80::1%eth0) are rejected: the engine's address parser has no names
            # for interfaces, and a mesh sidecar talks over loopback or routable addresses.
            return None if "%" in host else ipaddress.IPv6Address(host)
        return ipaddress.IPv4Address(host)
    except ValueError:
        return None


def _parse_port(text: str, port_text: str, lowest: int) -> int:
    if _PORT.match(port_text) and lowest <= int(port_text) <= 65535:
        return int(port_text)
    raise AddressError(f"{_show(text)} is not a valid address; expected a port from {lowest} to 65535 after the colon")


def _is_dns_name(host: str) -> bool:
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def _show(text: str) -> str:
    """A value quoted for a message, kept short (as the config's messages quote values)."""
    quoted = repr(text)
    return quoted if len(quoted) <= _MAX_SHOWN else quoted[: _MAX_SHOWN - 3] + "..."
