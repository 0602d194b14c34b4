"""Endpoint lists as discovery finds them: ``(address, weight)`` pairs, checked by the rules the
config schema applies to a cluster's ``endpoints`` (an address ``HOST:PORT``, a weight from 0
to 1,000,000, no address twice) without the schema itself, which a sidecar never loads.

A list that breaks a rule is refused whole, with a message naming the item at fault
(``[2].address: ...``); the source then keeps its last good list.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

from ..addresses import AddressError, parse_endpoint_address

MAX_WEIGHT = 1_000_000
"""The largest weight an endpoint may have, in the config and from discovery alike."""
_KEYS = ("address", "weight")


class Endpoint(NamedTuple):
    address: str
    """``HOST:PORT``, as the engine document writes it."""
    weight: int = 1


class EndpointListError(ValueError):
    """A list of endpoints that breaks a rule; the message says where and what would be valid."""


def read_endpoint_file(path: str) -> tuple[Endpoint, ...]:
    """The endpoints listed in a YAML or JSON file (by its suffix: ``.json`` is read as JSON,
    anything else as YAML, of which JSON is nearly a subset). Raises OSError when the file
    cannot be read and EndpointListError when its content is not an endpoint list."""
    with open(path, encoding="utf-8") as file:
        try:
            text = file.read()
        except UnicodeDecodeError as error:
            raise EndpointListError(f"not UTF-8 text: {error.reason}") from None
    if os.path.splitext(path)[1].lower() == ".json":
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as error:
            raise EndpointListError(f"not valid JSON: {error.msg} at line {error.lineno}") from None
    else:
        import yaml  # here: only a sidecar with a file source reads YAML

        try:
            data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError as error:
            raise EndpointListError(f"not valid YAML: {' '.join(str(error).split())}") from None
    return endpoint_list(data)


def endpoint_list(data: object) -> tuple[Endpoint, ...]:
    """``data`` (parsed YAML or JSON) checked as a list of ``{address, weight}`` mappings."""
    if not isinstance(data, list):
        raise EndpointListError(
            f"expected a list of endpoints such as [{{address: 127.0.0.1:8081, weight: 1}}], got {_kind(data)}"
        )
    endpoints: list[Endpoint] = []
    first: dict[tuple[str, int], int] = {}
    for i, item in enumerate(data):
        endpoint = _endpoint(i, item)
        key = parse_endpoint_address(endpoint.address)
        if key in first:
            raise EndpointListError(
                f"[{i}].address: duplicate endpoint {endpoint.address!r}; already listed as [{first[key]}]"
            )
        first[key] = i
        endpoints.append(endpoint)
    return tuple(endpoints)


def _endpoint(i: int, item: object) -> Endpoint:
    if not isinstance(item, dict):
        raise EndpointListError(f"[{i}]: expected a mapping with address and weight, got {_kind(item)}")
    unknown = [key for key in item if key not in _KEYS]
    if unknown:
        raise EndpointListError(f"[{i}]: unknown key {unknown[0]!r}; valid keys: {', '.join(_KEYS)}")
    address = item.get("address")
    if not isinstance(address, str):
        raise EndpointListError(f"[{i}].address: expected HOST:PORT, got {_kind(address)}")
    try:
        parse_endpoint_address(address)
    except AddressError as error:
        raise EndpointListError(f"[{i}].address: {error}") from None
    weight = item.get("weight", 1)
    # bool is an int subclass: `weight: yes` is a typo, not a weight of 1.
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
        raise EndpointListError(f"[{i}].weight: expected an integer from 0 to {MAX_WEIGHT}, got {weight!r}")
    return Endpoint(address, weight)


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"[:80]
