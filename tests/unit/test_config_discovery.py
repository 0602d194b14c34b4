"""The `discovery` key: what a config with it means, where its endpoint files are read from,
what travels to the sidecar in the engine document, and the rules an endpoint file must follow
(the same as for `endpoints`, checked without the schema)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from meshproxy import EngineDocument
from meshproxy.config import ConfigError, coerce_config, load_config
from meshproxy.discovery.endpoints import Endpoint, EndpointListError, endpoint_list, read_endpoint_file


def _config(discovery: dict[str, Any], **cluster: Any) -> dict[str, Any]:
    return {
        "listeners": [{"name": "outbound", "address": "127.0.0.1:15001", "routes": [{"cluster": "orders"}]}],
        "clusters": [{"name": "orders", "discovery": discovery, **cluster}],
    }


def test_an_endpoint_file_is_read_from_the_config_files_folder(tmp_path: Path) -> None:
    (tmp_path / "endpoints").mkdir()
    (tmp_path / "endpoints" / "orders.yaml").write_text("- {address: 127.0.0.1:8081, weight: 2}\n")
    (tmp_path / "sidecar.yaml").write_text(json.dumps(_config({"type": "file", "path": "endpoints/orders.yaml"})))

    document = load_config(tmp_path / "sidecar.yaml").engine_document()

    settings = {"type": "file", "path": str(tmp_path / "endpoints" / "orders.yaml")}
    assert document.discovery == {"orders": settings}
    [cluster] = json.loads(document.engine_json)["clusters"]
    assert (cluster["discovery"], cluster["endpoints"]) == (settings, [])


def test_dns_settings_travel_with_every_default_and_only_their_own_keys() -> None:
    document = coerce_config(_config({"type": "dns", "name": "orders.mesh.local", "port": 8080})).engine_document()
    assert document.discovery == {"orders": {
        "type": "dns", "name": "orders.mesh.local", "record": "A", "port": 8080, "resolver": None,
        "min_ttl": "1000ms", "max_ttl": "300000ms",
    }}
    # The sidecar reads them back from the document the validator printed.
    assert EngineDocument.from_json(document.to_json()).discovery == document.discovery


def test_a_cluster_without_discovery_carries_none() -> None:
    config = _config({"type": "dns", "name": "orders.mesh.local", "port": 8080})
    del config["clusters"][0]["discovery"]
    document = coerce_config(config).engine_document()
    assert document.discovery == {}
    assert json.loads(document.engine_json)["clusters"][0]["discovery"] is None


def test_an_endpoint_file_with_a_bad_entry_is_a_validation_error_naming_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "orders.yaml"
    path.write_text("- {address: 127.0.0.1:8081}\n- {address: 127.0.0.1:8082, weight: -1}\n")
    with pytest.raises(ConfigError) as caught:
        coerce_config(_config({"type": "file", "path": str(path)}))
    assert str(caught.value) == (
        f"<dict>: clusters[0].discovery.path: endpoint file {path}: [1].weight: "
        "expected an integer from 0 to 1000000, got -1"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"address": "a:1"}, "expected a list of endpoints such as [{address: 127.0.0.1:8081, weight: 1}], got a mapping"),
        (["a:1"], "[0]: expected a mapping with address and weight, got str 'a:1'"),
        ([{"address": "a:1", "port": 2}], "[0]: unknown key 'port'; valid keys: address, weight"),
        ([{"weight": 2}], "[0].address: expected HOST:PORT, got nothing"),
        ([{"address": "a"}], "[0].address: 'a' is not a valid address; expected HOST:PORT"),
        ([{"address": "a:1", "weight": True}], "[0].weight: expected an integer from 0 to 1000000, got True"),
        ([{"address": "a:1", "weight": 1_000_001}], "[0].weight: expected an integer from 0 to 1000000, got 1000001"),
        ([{"address": "Orders:80"}, {"address": "orders.:80"}],
         "[1].address: duplicate endpoint 'orders.:80'; already listed as [0]"),
    ],
)
def test_an_endpoint_list_follows_the_rules_of_endpoints(data: object, message: str) -> None:
    with pytest.raises(EndpointListError) as caught:
        endpoint_list(data)
    assert str(caught.value).startswith(message)


def test_an_endpoint_list_takes_what_endpoints_take() -> None:
    data = [{"address": "[::1]:8081"}, {"address": "orders.internal:80", "weight": 0}, {"address": "10.0.0.1:1"}]
    assert endpoint_list(data) == (Endpoint("[::1]:8081", 1), Endpoint("orders.internal:80", 0),
                                   Endpoint("10.0.0.1:1", 1))
    assert endpoint_list([]) == ()


def test_an_endpoint_file_says_which_syntax_it_breaks(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("[{'address': '127.0.0.1:1'}]")
    (tmp_path / "a.yaml").write_text("- {address: [\n")
    with pytest.raises(EndpointListError, match="^not valid JSON: Expecting property name"):
        read_endpoint_file(str(tmp_path / "a.json"))
    with pytest.raises(EndpointListError, match="^not valid YAML: "):
        read_endpoint_file(str(tmp_path / "a.yaml"))
