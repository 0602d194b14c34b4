"""Constrained scalar types used by the model: names, addresses, hosts, header names and
values, methods, paths. Each normalizes where the engine compares case-insensitively
(header names and hosts lowercased, methods uppercased) so the engine never has to.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import urllib.parse
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, Field

from ..addresses import AddressError, parse_endpoint_address, parse_listen_address
from .messages import invalid, show

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
NAME_RULE = "letters, digits, '_', '.' and '-', starting with a letter or digit"

# RFC 9110 token characters: what a header name or a method may be made of.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Control characters other than tab: the engine's header value type rejects them, and CR/LF
# would let a config smuggle extra header lines.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_HOST_LABEL = r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?\n?"
# Dot-separated labels, in one match rather than one per label (a mesh has ten thousand route
# hosts). The optional newline after each label is what `$` allowed when labels were matched
# one by one; kept so that exactly the same hosts pass.
_HOST_NAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\Z")
_PATH_BAD = re.compile(r"[\s\x00-\x1f\x7f]")
# A name to resolve: labels of letters, digits, hyphens and underscores (SRV names such as
# _http._tcp.orders), an optional trailing dot for a fully qualified name.
_DNS_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
# Route hosts and paths repeat: a mesh's ten thousand routes name a thousand hosts and a few
# path prefixes. A value checked once is answered from memory (a refused one raises again, as
# exceptions are not remembered); bounded, so that a long-lived process reloading configs with
# ever new hosts does not grow without end.
_SEEN_VALUES = 1 << 14


def _listen_address(value: str) -> str:
    try:
        parse_listen_address(value)
    except AddressError as error:
        raise invalid(str(error)) from None
    return value


def _endpoint_address(value: str) -> str:
    try:
        parse_endpoint_address(value)
    except AddressError as error:
        raise invalid(str(error)) from None
    return value


def _resolver_address(value: str) -> str:
    try:
        _, port = parse_listen_address(value)
    except AddressError:
        port = 0
    if port == 0:
        raise invalid(f"{show(value)} is not a valid resolver address; expected IP:PORT, e.g. 127.0.0.1:53")
    return value


def _dns_name(value: str) -> str:
    name = value[:-1] if value.endswith(".") else value
    if 0 < len(name) <= 253 and all(_DNS_LABEL.match(label) for label in name.split(".")):
        return value
    raise invalid(
        f"{show(value)} is not a valid DNS name; expected labels of letters, digits, '-' and '_' "
        "separated by dots, e.g. orders.mesh.local or _http._tcp.orders.mesh.local"
    )


def _header_name(value: str) -> str:
    if not _TOKEN.match(value):
        raise invalid(
            f"{show(value)} is not a valid header name; expected letters, digits and !#$%&'*+-.^_`|~ (an HTTP token)"
        )
    return value.lower()


def _header_value(value: str) -> str:
    if _CONTROL.search(value):
        raise invalid(
            f"{show(value)} is not a valid header value; it must not contain CR, LF or other control characters"
        )
    return value


def _method(value: str) -> str:
    if not _TOKEN.match(value):
        raise invalid(f"{show(value)} is not a valid HTTP method; expected a token such as GET or POST")
    return value.upper()


def _file_path(value: str) -> str:
    if not value or "\x00" in value:
        raise invalid(f"{show(value)} is not a valid file path")
    return value


def _otlp_endpoint(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or parts.query or parts.fragment:
        raise invalid(
            f"{show(value)} is not a valid OTLP/HTTP endpoint; expected an http:// or https:// URL with a "
            "host, e.g. http://127.0.0.1:4318"
        )
    return value


@functools.lru_cache(maxsize=_SEEN_VALUES)
def _url_path(value: str) -> str:
    if not value.startswith("/"):
        raise invalid(f"{show(value)} is not a valid path; it must start with '/'")
    if _PATH_BAD.search(value):
        raise invalid(f"{show(value)} is not a valid path; it must not contain spaces or control characters")
    return value


@functools.lru_cache(maxsize=_SEEN_VALUES)
def _host(value: str) -> str:
    host = value.lower()
    if host == "*":
        return host
    name = host[2:] if host.startswith("*.") else host
    if host.startswith("[") and host.endswith("]"):
        # An IPv6 literal, bracketed as it appears in a Host header.
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise invalid(f"{show(value)} is not a valid host; {show(host[1:-1])} is not an IPv6 address") from None
        return host
    if ":" in name:
        raise invalid(
            f"{show(value)} is not a valid host; hosts are matched without the port, "
            f"e.g. {show(name.rsplit(':', 1)[0])}"
        )
    if _HOST_NAME.match(name):
        return host
    raise invalid(
        f"{show(value)} is not a valid host; expected a name (orders), '*' for any host, "
        "or '*.' and a suffix (*.example.com)"
    )


Name = Annotated[str, Field(pattern=NAME_PATTERN)]
ListenAddress = Annotated[str, AfterValidator(_listen_address)]
EndpointAddress = Annotated[str, AfterValidator(_endpoint_address)]
ResolverAddress = Annotated[str, AfterValidator(_resolver_address)]
"""``IP:PORT`` of a DNS server."""
DnsName = Annotated[str, AfterValidator(_dns_name)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]
Method = Annotated[str, AfterValidator(_method)]
UrlPath = Annotated[str, AfterValidator(_url_path)]
FilePath = Annotated[str, AfterValidator(_file_path)]
"""A file the engine reads; relative to the config file's folder until the loader resolves it."""
Host = Annotated[str, AfterValidator(_host)]
OtlpEndpoint = Annotated[str, AfterValidator(_otlp_endpoint)]
"""The base URL of an OTLP/HTTP collector (spans go to its /v1/traces), or the full URL of its
traces endpoint when it has a path."""
Ratio = Annotated[float, Field(ge=0.0, le=1.0)]
"""A share of requests, from 0.0 (none) to 1.0 (all)."""

AccessLogField = Literal[
    "time",
    "duration_ms",
    "listener",
    "direction",
    "protocol",
    "method",
    "authority",
    "path",
    "status",
    "route",
    "cluster",
    "upstream_address",
    "bytes_in",
    "bytes_out",
    "request_id",
    "trace_id",
    "span_id",
    "client_address",
    "peer_identity",
    "error",
    "grpc_status",
]
"""The fields of an access log line, in the order a line writes them (the engine's
access_log::Field)."""
ACCESS_LOG_FIELDS: tuple[AccessLogField, ...] = get_args(AccessLogField)
