"""Endpoint lists are read in bulk by the engine's reader when it is sure of them, and by the
schema item by item otherwise: both ways give the same config, and the reader is never sure
of an address the schema refuses."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from meshproxy import _native
from meshproxy.config import ConfigError, Endpoint, coerce_config, load_config
from meshproxy.addresses import parse_endpoint_address

ROOT = Path(__file__).resolve().parents[2]
VALID = sorted((ROOT / "tests" / "fixtures" / "configs" / "valid").glob("*.yaml"))


def _one_cluster(*endpoints: Any) -> dict[str, Any]:
    return {
        "listeners": [{"name": "l", "address": "127.0.0.1:0", "routes": [{"cluster": "c"}]}],
        "clusters": [{"name": "c", "endpoints": list(endpoints)}],
    }


def _schema_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_native, "read_endpoints", lambda items: None)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_bulk_and_item_by_item_reading_give_the_same_config(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bulk = load_config(path)
    _schema_only(monkeypatch)
    one_by_one = load_config(path)
    assert bulk == one_by_one
    assert bulk.engine_json() == one_by_one.engine_json()


def test_endpoints_read_as_models() -> None:
    cfg = coerce_config(_one_cluster({"address": "10.0.0.1:80"}, {"address": "Orders.Internal.:8080", "weight": 0}))
    endpoints = cfg.clusters[0].endpoints
    assert len(endpoints) == 2
    assert endpoints[1] == Endpoint(address="Orders.Internal.:8080", weight=0)
    assert [(e.address, e.weight) for e in endpoints] == [("10.0.0.1:80", 1), ("Orders.Internal.:8080", 0)]
    assert cfg.clusters[0].model_dump()["endpoints"] == [
        {"address": "10.0.0.1:80", "weight": 1},
        {"address": "Orders.Internal.:8080", "weight": 0},
    ]
    assert json.loads(cfg.engine_json())["clusters"][0]["endpoints"] == cfg.clusters[0].model_dump()["endpoints"]


@pytest.mark.parametrize(
    ("endpoints", "message"),
    [
        ([{"address": "10.0.0.1:80"}, {"address": "10.0.0.1:80"}], "duplicate endpoint '10.0.0.1:80'"),
        ([{"address": "orders:80"}, {"address": "ORDERS.:80"}], "duplicate endpoint 'ORDERS.:80'"),
        ([{"address": "10.0.0.1:0"}], "expected a port from 1 to 65535"),
        ([{"address": "10.0.0.1:80", "weight": True}], "expected an integer, got boolean true"),
        ([{"address": "10.0.0.1:80", "extra": 1}], "unknown key 'extra'; valid keys: address, weight"),
        ([{"address": "10.0.0.1:80", "weight": 1_000_001}], "1000001 is out of range"),
    ],
)
def test_what_the_reader_is_not_sure_of_gets_the_schemas_message(endpoints: list[Any], message: str) -> None:
    with pytest.raises(ConfigError, match="clusters\\[0\\].endpoints\\[[01]\\]") as caught:
        coerce_config(_one_cluster(*endpoints))
    assert message in str(caught.value)


def _schema_accepts(address: str) -> bool:
    try:
        parse_endpoint_address(address)
        return True
    except ValueError:
        return False


def test_the_reader_is_never_sure_of_an_address_the_schema_refuses() -> None:
    pieces = ["1", "0", "01", "255", "256", ".", "a", "A", "-", "_", ":", "8", "\n", "é", "[::1]"]
    checked = 0
    for length in range(1, 6):
        for parts in itertools.product(pieces, repeat=length):
            address = "".join(parts)
            for candidate in (address, address + ":80"):
                if _native.read_endpoints([{"address": candidate}]) is not None:
                    assert _schema_accepts(candidate), candidate
                    checked += 1
    assert checked > 1_000


def test_the_reader_is_never_sure_of_two_addresses_the_schema_calls_one() -> None:
    same = [("orders:80", "Orders:80"), ("orders:80", "orders.:80"), ("orders:80", "orders:080"), ("1.2.3.4:1", "1.2.3.4:01")]
    for a, b in same:
        assert parse_endpoint_address(a) == parse_endpoint_address(b)
        assert _native.read_endpoints([{"address": a}, {"address": b}]) is None, (a, b)
    assert _native.read_endpoints([{"address": "orders:80"}, {"address": "orders:81"}]) is not None

