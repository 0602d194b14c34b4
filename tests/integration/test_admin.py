"""The admin HTTP API of ``meshproxy run``: probes, the running config, the engine's counters,
unknown paths and methods, asked over real HTTP on loopback. (``/clusters`` and ``/routes``:
test_admin_views.py; ``POST /drain``: test_drain.py; ``POST /reload``: test_hot_reload.py.)"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import meshproxy
import pytest
import yaml
from conftest import (
    ProxyProcess,
    Upstream,
    accepts_connections,
    closed_port_address,
    one_route_config,
    wait_until,
)

Upstreams = Callable[[str], Upstream]
ADMIN = {"address": "127.0.0.1:0"}


@pytest.fixture
def admin_client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def app_config(upstream: Upstream, **top: Any) -> dict[str, Any]:
    return one_route_config({"name": "app", "endpoints": [{"address": upstream.address}]}, admin=ADMIN, **top)


def test_admin_on_port_0_logs_its_bound_address(meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams,
                                                admin_client: httpx.Client) -> None:
    proxy = meshproxy_run(app_config(upstreams("v1")))
    admin_lines = [line for line in proxy.log_lines if "admin on" in line]
    assert len(admin_lines) == 1
    match = re.fullmatch(r"meshproxy: admin on http://127\.0\.0\.1:(\d+)/\n", admin_lines[0])
    assert match is not None, admin_lines
    assert int(match.group(1)) != 0
    assert admin_client.get(f"http://127.0.0.1:{match.group(1)}/live").status_code == 200


def test_no_admin_section_means_no_admin_server(meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams) -> None:
    config = app_config(upstreams("v1"))
    del config["admin"]
    proxy = meshproxy_run(config)
    assert proxy.admin is None
    assert not any("admin on" in line for line in proxy.log_lines)


@pytest.mark.parametrize(("path", "body"), [("/ready", "ready\n"), ("/live", "live\n")])
def test_probes_answer_200_once_the_listeners_are_bound(
    meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, admin_client: httpx.Client, path: str, body: str
) -> None:
    proxy = meshproxy_run(app_config(upstreams("v1")))
    response = admin_client.get(f"http://{proxy.admin}{path}")
    assert response.status_code == 200
    assert response.text == body


def test_config_is_the_engine_document_of_the_running_file(
    tmp_path: Path, meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, admin_client: httpx.Client
) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump(app_config(upstreams("v1"))))
    proxy = meshproxy_run(path)

    response = admin_client.get(f"http://{proxy.admin}/config")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == json.loads(meshproxy.load_config(path).engine_json())


def test_config_follows_a_reload(
    tmp_path: Path, meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, admin_client: httpx.Client
) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump(app_config(upstreams("v1"))))
    proxy = meshproxy_run(path)

    path.write_text(yaml.safe_dump(app_config(upstreams("v2"))))
    expected = json.loads(meshproxy.load_config(path).engine_json())
    proxy.process.send_signal(signal.SIGHUP)
    wait_until(lambda: admin_client.get(f"http://{proxy.admin}/config").json() == expected, timeout=10,
               what="/config to show the reloaded file")
    assert admin_client.get(f"http://{proxy.admin}/stats").json()["config_version"] == 2


def test_sighup_with_a_new_admin_address_moves_the_admin_server_and_logs_it(
    tmp_path: Path, meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, admin_client: httpx.Client
) -> None:
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump(app_config(upstreams("v1"))))
    proxy = meshproxy_run(path)
    old = proxy.admin
    assert old is not None
    moved_to = closed_port_address()
    config = app_config(upstreams("v1"))
    config["admin"] = {"address": moved_to}
    path.write_text(yaml.safe_dump(config))
    logged_before = len(proxy.log_lines)

    proxy.process.send_signal(signal.SIGHUP)
    wait_until(lambda: f"meshproxy: admin on http://{moved_to}/\n" in proxy.log_lines[logged_before:], timeout=10,
               what="the moved admin address in the log")
    assert admin_client.get(f"http://{moved_to}/stats").json()["config_version"] == 2
    assert not accepts_connections(old)


def test_stats_count_the_requests_sent(
    meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, admin_client: httpx.Client
) -> None:
    proxy = meshproxy_run(app_config(upstreams("v1")), "--workers", "2")
    address = proxy.address("outbound")
    with httpx.Client(timeout=10) as client:
        for _ in range(5):
            assert client.get(f"http://{address}/anything").status_code == 200
        assert client.get(f"http://{address}/status/503").status_code == 503

    response = admin_client.get(f"http://{proxy.admin}/stats")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    stats = response.json()
    assert set(stats) == {"listeners", "clusters", "errors", "tls", "authorization", "traffic", "log_lines_dropped",
                          "access_log", "tracing", "config_version", "workers", "busy_poll", "reload_outcomes",
                          "route_rules"}
    assert stats["config_version"] == 1
    assert stats["reload_outcomes"] == {"succeeded": 0, "failed": 0}
    assert stats["workers"] == 2

    listener = stats["listeners"]["outbound"]
    assert listener["requests_total"] == 6
    assert listener["responses"] == {"1xx": 0, "2xx": 5, "3xx": 0, "4xx": 0, "5xx": 1}
    # One client connection, kept alive for all six requests.
    assert listener["connections_total"] == 1

    cluster = stats["clusters"]["app"]
    assert cluster["upstream_requests_total"] == 6
    assert cluster["responses"] == {"1xx": 0, "2xx": 5, "3xx": 0, "4xx": 0, "5xx": 1}
    assert set(stats["errors"].values()) == {0}


@pytest.mark.parametrize("path", ["/", "/stats/extra", "/metrics/extra", "/readyz", "/clusters/app"])
def test_unknown_admin_path_is_404_listing_every_endpoint_with_its_method(
    meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, admin_client: httpx.Client, path: str
) -> None:
    proxy = meshproxy_run(app_config(upstreams("v1")))
    for method in ("GET", "POST"):
        response = admin_client.request(method, f"http://{proxy.admin}{path}")
        assert response.status_code == 404
        assert response.text.startswith("unknown admin path; try ")
        for endpoint in ("GET /ready", "GET /live", "GET /config", "GET /stats", "GET /metrics", "GET /clusters", "GET /routes",
                         "POST /drain", "POST /reload"):
            assert endpoint in response.text


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("POST", "/stats", "GET"),
    ("PUT", "/ready", "GET"),
    ("GET", "/drain", "POST"),
    ("GET", "/reload", "POST"),
    ("DELETE", "/reload", "POST"),
])
def test_a_known_path_with_the_wrong_method_is_405_naming_the_right_one(
    meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams, admin_client: httpx.Client,
    method: str, path: str, allowed: str,
) -> None:
    proxy = meshproxy_run(app_config(upstreams("v1")))
    response = admin_client.request(method, f"http://{proxy.admin}{path}")
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.text == f"{path} takes {allowed}\n"
    # Nothing happened: still ready, still on the first config.
    assert admin_client.get(f"http://{proxy.admin}/ready").status_code == 200
    assert admin_client.get(f"http://{proxy.admin}/stats").json()["config_version"] == 1
