"""Hosts, paths and durations that many routes share are checked (or written) once and then
answered from memory: a value refused once is refused every time, with the same message and
path, and an accepted one reads the same the second time."""

from __future__ import annotations

from typing import Any

import pytest
from meshproxy.config import ConfigError
from meshproxy.config.load import read_config


def config(host: str, prefix: str, timeout: str = "15s") -> dict[str, Any]:
    route = {"match": {"host": host, "path_prefix": prefix}, "cluster": "c", "timeout": timeout}
    return {
        "listeners": [{"name": "out", "address": "127.0.0.1:0", "routes": [route, dict(route)]}],
        "clusters": [{"name": "c", "endpoints": [{"address": "127.0.0.1:8080"}]}],
    }


@pytest.mark.parametrize(
    ("host", "prefix", "path", "message"),
    [
        ("orders:80", "/", "match.host", "'orders:80' is not a valid host; hosts are matched without the port"),
        ("orders", "api", "match.path_prefix", "'api' is not a valid path; it must start with '/'"),
    ],
)
def test_a_refused_value_is_refused_every_time_it_appears(host: str, prefix: str, path: str, message: str) -> None:
    for _ in range(2):
        with pytest.raises(ConfigError) as refused:
            read_config(config(host, prefix))
        text = str(refused.value)
        assert f"listeners[0].routes[0].{path}: {message}" in text
        assert f"listeners[0].routes[1].{path}: {message}" in text


def test_an_accepted_value_reads_the_same_each_time() -> None:
    first, _ = read_config(config("Orders.Mesh", "/api/", "1.5s"))
    again, _ = read_config(config("Orders.Mesh", "/api/", "1.5s"))
    assert [r.match_.host for r in again.listeners[0].routes] == ["orders.mesh", "orders.mesh"]
    assert again.engine_json() == first.engine_json()
    assert '"timeout":"1500ms"' in again.engine_json()
