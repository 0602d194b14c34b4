"""The public entry points: the README config means what the README says, every input kind
(file, text, dict, Config) goes through the same checks, and the engine document is complete."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from meshproxy.config import (
    Config,
    ConfigError,
    HeaderMatch,
    coerce_config,
    json_schema,
    load_config,
    parse_config,
)
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[2]
README_CONFIG = ROOT / "examples" / "orders.yaml"


def _minimal(**listener: object) -> dict[str, object]:
    return {"listeners": [{"name": "outbound", "address": "127.0.0.1:15001", **listener}]}


def test_readme_config_has_the_documented_values() -> None:
    cfg = load_config(README_CONFIG)

    assert cfg.source == str(README_CONFIG)
    assert cfg.workers is None
    assert cfg.admin is not None and cfg.admin.address == "127.0.0.1:15000"
    assert (cfg.limits.max_header_bytes, cfg.limits.max_concurrent_streams) == (65536, 1024)

    [listener] = cfg.listeners
    assert (listener.name, listener.address, listener.protocol) == ("outbound", "127.0.0.1:15001", "auto")
    beta, main = listener.routes
    assert beta.match_.host == "orders"
    assert beta.match_.headers == {"x-channel": HeaderMatch(exact="beta")}
    assert (beta.cluster, beta.split) == ("orders-v2", None)
    assert main.match_.host == "orders" and main.match_.path_prefix == "/"
    assert main.cluster is None
    assert [(w.cluster, w.weight) for w in main.split or []] == [("orders-v1", 90), ("orders-v2", 10)]
    assert beta.timeout == main.timeout == timedelta(seconds=15)

    v1, v2 = cfg.clusters
    assert (v1.name, v1.lb, v1.protocol, v1.connect_timeout) == ("orders-v1", "p2c_ewma", "http1", timedelta(seconds=1))
    assert [(e.address, e.weight) for e in v1.endpoints] == [("127.0.0.1:8081", 1), ("127.0.0.1:8082", 2)]
    assert (v2.name, v2.lb, v2.protocol) == ("orders-v2", "p2c_ewma", "http1")
    assert [(e.address, e.weight) for e in v2.endpoints] == [("127.0.0.1:8083", 1)]


def test_readme_engine_document_is_complete_and_normalized() -> None:
    doc = json.loads(load_config(README_CONFIG).engine_json())

    assert doc["workers"] is None
    assert doc["admin"] == {"address": "127.0.0.1:15000"}
    assert doc["limits"] == {"max_header_bytes": 65536, "max_concurrent_streams": 1024}
    beta = doc["listeners"][0]["routes"][0]
    assert beta == {
        "name": None,
        "match": {
            "host": "orders",
            "path": None,
            "path_prefix": None,
            "path_regex": None,
            "headers": {"x-channel": {"exact": "beta"}},
            "method": None,
            "original_destination": None,
            "connect": False,
            "ports": None,
        },
        "cluster": "orders-v2",
        "split": None,
        "redirect": None,
        "direct_response": None,
        "prefix_rewrite": None,
        "regex_rewrite": None,
        "host_rewrite": None,
        "rate_limit": None,
        "fault": None,
        "mirror": None,
        "request_headers": {"add": {}, "remove": []},
        "response_headers": {"add": {}, "remove": []},
        "timeout": "15000ms",
        "timeout_covers": "headers",
        "idle_timeout": "0ms",
        "hash_policy": [],
        "retry": None,
    }
    assert doc["clusters"][1] == {
        "name": "orders-v2",
        "lb": "p2c_ewma",
        "protocol": "http1",
        "connect_timeout": "1000ms",
        "idle_timeout": "60000ms",
        "tls": {"mode": "disable", "identities": [], "sni": None, "ca": None},
        "endpoints": [{"address": "127.0.0.1:8083", "weight": 1}],
        "discovery": None,
        "health_check": None,
        "outlier_detection": None,
        "circuit_breakers": None,
        "original_destination": False,
    }


def test_normalization_of_hosts_headers_and_methods() -> None:
    cfg = parse_config(
        """
listeners:
  - name: outbound
    address: "[::1]:0"
    routes:
      - match:
          host: Orders.Example.COM
          headers: {X-Channel: beta, X-Debug: {present: false}, X-Id: {regex: "[0-9]+"}}
          method: get
        request_headers: {add: {X-Added: "1"}, remove: [X-Secret]}
        cluster: c
clusters: [{name: c}]
"""
    )
    route = json.loads(cfg.engine_json())["listeners"][0]["routes"][0]
    assert route["match"]["host"] == "orders.example.com"
    assert route["match"]["headers"] == {
        "x-channel": {"exact": "beta"},
        "x-debug": {"present": False},
        "x-id": {"regex": "[0-9]+"},
    }
    assert route["match"]["method"] == ["GET"]
    assert route["request_headers"] == {"add": {"x-added": "1"}, "remove": ["x-secret"]}


def test_match_dumps_by_alias_even_without_asking() -> None:
    route = parse_config(
        "listeners: [{name: l, address: '127.0.0.1:0', routes: [{cluster: c}]}]\nclusters: [{name: c}]"
    )
    dumped = route.listeners[0].routes[0].model_dump()
    assert "match" in dumped and "match_" not in dumped


def test_dict_input_is_validated_with_the_same_checks_but_no_lines() -> None:
    cfg = coerce_config(_minimal(routes=[{"cluster": "c"}]) | {"clusters": [{"name": "c"}]})
    assert cfg.source == "<dict>"
    assert cfg.listeners[0].routes[0].cluster == "c"

    with pytest.raises(ConfigError) as caught:
        coerce_config(_minimal(routes=[{"cluster": "nope"}]))
    assert str(caught.value) == "<dict>: listeners[0].routes[0].cluster: unknown cluster 'nope'; defined clusters: none"
    assert caught.value.issues[0].line is None


def test_coerce_accepts_paths_and_configs() -> None:
    by_str = coerce_config(str(README_CONFIG))
    by_path = coerce_config(README_CONFIG)
    assert by_str.engine_json() == by_path.engine_json()
    assert coerce_config(by_path) is by_path
    with pytest.raises(TypeError, match="expected a Config, a dict or a file path, got int"):
        coerce_config(42)  # type: ignore[arg-type]


def test_coerce_rechecks_a_config_built_without_the_loader() -> None:
    """Config.model_validate checks each section but not cross-references; coerce does."""
    raw = Config.model_validate(_minimal(routes=[{"cluster": "gone"}]))
    with pytest.raises(ConfigError, match="unknown cluster 'gone'"):
        coerce_config(raw)


def test_parse_config_names_its_source() -> None:
    cfg = parse_config("listeners: [{name: l, address: '127.0.0.1:0'}]", source="inline.yaml")
    assert cfg.source == "inline.yaml"
    with pytest.raises(ConfigError) as caught:
        parse_config("listeners: [{name: l, address: nowhere}]")
    assert str(caught.value).startswith("<string>:1: listeners[0].address: 'nowhere' is not a valid address")


def test_unreadable_file_names_the_file_and_the_os_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert str(caught.value) == f"{missing}: cannot read config file: No such file or directory"

    directory = tmp_path / "dir.yaml"
    directory.mkdir()
    with pytest.raises(ConfigError, match=f"^{directory}: cannot read config file: Is a directory$"):
        load_config(os.fspath(directory))


def test_non_utf8_file_is_an_issue(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"listeners: [{name: caf\xe9, address: '127.0.0.1:0'}]\n")
    with pytest.raises(ConfigError, match="config file is not UTF-8 text"):
        load_config(path)


def test_config_is_an_immutable_snapshot() -> None:
    cfg = coerce_config(_minimal())
    with pytest.raises(ValidationError, match="frozen"):
        cfg.workers = 4
    changed = cfg.model_copy(update={"workers": 4})
    assert (cfg.workers, changed.workers) == (None, 4)


def test_json_schema_describes_the_file_format() -> None:
    schema = json_schema()
    assert schema["required"] == ["listeners"]
    assert schema["additionalProperties"] is False
    route = schema["$defs"]["Route"]["properties"]
    assert "match" in route and "match_" not in route
    assert route["timeout"]["default"] == "15000ms"
    cluster = schema["$defs"]["Cluster"]["properties"]
    assert cluster["lb"]["enum"] == ["round_robin", "random", "least_request", "p2c_ewma", "ring_hash", "maglev"]
    headers = schema["$defs"]["RouteMatch"]["properties"]["headers"]
    assert headers["additionalProperties"] == {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/HeaderMatch"}]}
    json.dumps(schema)  # serializable as is


def test_json_schema_describes_fields_with_their_docstrings() -> None:
    # Read from the source when the schema is made, not when the models are built.
    schema = json_schema()
    route = schema["$defs"]["Route"]["properties"]
    # The field's docstring wins over the description of its type (a Duration's).
    assert " ".join(route["timeout"]["description"].split()) == (
        "From sending the request upstream to the response's headers (retries included), or to its last "
        "byte with timeout_covers: response; 0 means no timeout. Past it before the headers: 504 "
        "(x-meshproxy-error: timeout); after them: the response is cut (reset).")
    tracing = schema["$defs"]["Tracing"]["properties"]
    assert tracing["sample"]["description"] == (
        "The share of new traces recorded; a sampling decision that comes with the request wins.")
    described = [name for name, field in schema["$defs"]["Listener"]["properties"].items() if "description" in field]
    assert described == ["protocol", "direction", "tls", "idle_timeout", "authorization", "rate_limit", "original_destination",
                         "detect_timeout", "tcp_fallback", "routes"]
    # A docstring that spans lines is cleaned of its indentation.
    direction = schema["$defs"]["Listener"]["properties"]["direction"]["description"].splitlines()
    assert len(direction) > 1 and not any(line.startswith(" ") for line in direction)
