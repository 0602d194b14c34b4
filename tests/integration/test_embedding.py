"""The embedding API: ``meshproxy.Proxy`` run inside this test process, configured from a dict,
a file or a ``Config`` model, reloaded, asked for its stats, and type-checked against the
native module it wraps."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import meshproxy
import pytest
import yaml
from conftest import (
    Upstream,
    accepts_connections,
    body_json,
    closed_port_address,
    occupied_address,
    one_route_config,
    served_by,
)

Upstreams = Callable[[str], Upstream]
PACKAGE_DIR = Path(meshproxy.__file__).parent


def cluster(name: str, upstream: Upstream) -> dict[str, Any]:
    return {"name": name, "endpoints": [{"address": upstream.address}]}


def to(upstream: Upstream, **top: Any) -> dict[str, Any]:
    """One listener sending every request to ``upstream``."""
    return one_route_config(cluster("app", upstream), **top)




def wait_unbound(address: str) -> None:
    """Nothing accepts on ``address`` any more: the engine returns from stop and reload only
    once a removed listener's socket is closed, so its port can be bound again at once."""
    assert not accepts_connections(address), f"{address} still accepts connections"


# --- lifecycle -----------------------------------------------------------------------------


def test_async_with_serves_inside_and_unbinds_on_exit(upstreams: Upstreams) -> None:
    v1 = upstreams("v1")

    async def scenario() -> str:
        async with meshproxy.Proxy(to(v1)) as proxy:
            assert proxy.running
            address = proxy.address("outbound")
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.get(f"http://{address}/anything")
            assert response.status_code == 200
            assert body_json(response)["upstream"] == "v1"
        assert not proxy.running
        return address

    address = asyncio.run(scenario())
    wait_unbound(address)


def test_async_with_exit_drains_a_request_in_flight_without_blocking_the_event_loop(upstreams: Upstreams) -> None:
    v1 = upstreams("v1")

    async def scenario() -> tuple[httpx.Response, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        async with httpx.AsyncClient(timeout=10) as client:
            async with meshproxy.Proxy(to(v1), drain_timeout=10) as proxy:
                request = asyncio.create_task(client.get(f"http://{proxy.address('outbound')}/delay/1000"))
                for _ in range(500):  # up to 5s for the request to reach the upstream
                    if proxy.stats()["clusters"]["app"]["upstream_requests_total"] == 1:
                        break
                    await asyncio.sleep(0.01)
                else:
                    raise AssertionError("the request never reached the upstream")
                clock = asyncio.create_task(ticker())
                await asyncio.sleep(0)
                ticks = 0
            # Exiting waited for the request (about 1s); the loop kept running meanwhile.
            ticks_while_draining = ticks
            clock.cancel()
            return await request, ticks_while_draining

    response, ticks = asyncio.run(scenario())
    assert response.status_code == 200
    assert body_json(response)["path"] == "/delay/1000"
    assert ticks >= 5


def test_start_and_stop(upstreams: Upstreams) -> None:
    proxy = meshproxy.Proxy(to(upstreams("v1")))
    assert not proxy.running
    assert proxy.start() is proxy
    try:
        address = proxy.address("outbound")
        assert served_by(address) == "v1"
        assert proxy.version == 1
    finally:
        proxy.stop()
    assert not proxy.running
    wait_unbound(address)
    proxy.stop()  # idempotent


def test_with_block_stops_even_when_the_body_raises(upstreams: Upstreams) -> None:
    with pytest.raises(ZeroDivisionError), meshproxy.Proxy(to(upstreams("v1"))) as proxy:
        address = proxy.address("outbound")
        assert served_by(address) == "v1"
        1 / 0  # noqa: B018
    assert not proxy.running
    wait_unbound(address)


def test_a_stopped_proxy_can_start_again(upstreams: Upstreams) -> None:
    proxy = meshproxy.Proxy(to(upstreams("v1")))
    with proxy:
        pass
    with proxy:
        assert served_by(proxy.address("outbound")) == "v1"
        assert proxy.version == 1


def test_starting_twice_raises_runtime_error(upstreams: Upstreams) -> None:
    with meshproxy.Proxy(to(upstreams("v1"))) as proxy, pytest.raises(RuntimeError, match="already running"):
        proxy.start()


@pytest.mark.parametrize("call", [
    pytest.param(lambda proxy: proxy.stats(), id="stats"),
    pytest.param(lambda proxy: proxy.listeners(), id="listeners"),
    pytest.param(lambda proxy: proxy.address("outbound"), id="address"),
    pytest.param(lambda proxy: proxy.version, id="version"),
    pytest.param(lambda proxy: proxy.reload(proxy.config), id="reload"),
])
@pytest.mark.parametrize("started", [True, False], ids=["stopped", "never-started"])
def test_using_a_proxy_that_is_not_running_raises_runtime_error(
    upstreams: Upstreams, call: Callable[[meshproxy.Proxy], object], started: bool
) -> None:
    proxy = meshproxy.Proxy(to(upstreams("v1")))
    if started:
        with proxy:
            pass
    with pytest.raises(RuntimeError, match=r"^the proxy is not running; call start\(\) first$"):
        call(proxy)


def test_a_listener_address_in_use_fails_start_with_bind_error_and_leaves_it_stopped(upstreams: Upstreams) -> None:
    with occupied_address() as busy:
        config = to(upstreams("v1"))
        config["listeners"][0]["address"] = busy
        proxy = meshproxy.Proxy(config)
        with pytest.raises(OSError, match=f"listener 'outbound' cannot bind {busy}: Address already in use"):
            proxy.start()
    assert not proxy.running


# --- config inputs -------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["dict", "str-path", "pathlib-path", "model"])
def test_config_may_be_a_dict_a_path_or_a_model(tmp_path: Path, upstreams: Upstreams, form: str) -> None:
    document = to(upstreams("v2"))
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump(document))
    config: Any = {
        "dict": document,
        "str-path": str(path),
        "pathlib-path": path,
        "model": meshproxy.Config.model_validate(document),
    }[form]
    with meshproxy.Proxy(config) as proxy:
        assert served_by(proxy.address("outbound")) == "v2"
        assert proxy.config.engine_json() == meshproxy.load_config(path).engine_json()


def test_an_invalid_config_is_refused_before_anything_binds(upstreams: Upstreams) -> None:
    document = to(upstreams("v1"))
    document["listeners"][0]["routes"] = [{"cluster": "nope"}]
    with pytest.raises(meshproxy.ConfigError) as dict_error:
        meshproxy.Proxy(document)
    assert str(dict_error.value) == "<dict>: listeners[0].routes[0].cluster: unknown cluster 'nope'; defined clusters: app"
    # A model is re-checked too: model_validate alone skips the cross-section checks.
    with pytest.raises(meshproxy.ConfigError, match="unknown cluster 'nope'"):
        meshproxy.Proxy(meshproxy.Config.model_validate(document))


def test_an_engine_document_runs_as_given_and_reads_back_as_its_config(upstreams: Upstreams) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    document = meshproxy.coerce_config(to(v1, admin={"address": "127.0.0.1:0"})).engine_document()
    with meshproxy.Proxy(document) as proxy:
        assert served_by(proxy.address("outbound")) == "v1"
        assert proxy.document is document
        assert proxy.config.engine_json() == document.engine_json
        with httpx.Client(timeout=10) as client:
            assert client.get(f"http://{proxy.admin_address}/config").json() == json.loads(document.engine_json)

        assert proxy.reload(meshproxy.coerce_config(to(v2)).engine_document()) == 2
        assert served_by(proxy.address("outbound")) == "v2"
        assert proxy.admin_address is None
        assert proxy.config.clusters[0].endpoints[0].address == v2.address


def with_path_regex(document: meshproxy.EngineDocument, regex: str) -> meshproxy.EngineDocument:
    engine = json.loads(document.engine_json)
    engine["listeners"][0]["routes"][0]["match"]["path_regex"] = regex
    return document._replace(engine_json=json.dumps(engine))


def test_an_engine_document_the_engine_refuses_raises_config_rejected_with_its_paths(upstreams: Upstreams) -> None:
    document = meshproxy.coerce_config(to(upstreams("v1"))).engine_document()
    problem = ("listeners[0].routes[0].match.path_regex", "not a valid regular expression: unclosed group")
    proxy = meshproxy.Proxy(with_path_regex(document, "("))
    with pytest.raises(meshproxy._native.ConfigRejected) as refused:
        proxy.start()
    assert refused.value.args[1] == [problem]
    assert not proxy.running

    with meshproxy.Proxy(document) as proxy:
        with pytest.raises(meshproxy._native.ConfigRejected) as refused:
            proxy.reload(with_path_regex(document, "("))
        assert refused.value.args[1] == [problem]
        assert proxy.version == 1
        assert proxy.document is document
        assert served_by(proxy.address("outbound")) == "v1"


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(meshproxy.ConfigError, match="cannot read config file: No such file or directory"):
        meshproxy.Proxy(tmp_path / "absent.yaml")


def test_workers_argument_sets_the_engine_workers(upstreams: Upstreams) -> None:
    with meshproxy.Proxy(to(upstreams("v1"), workers=1), workers=2) as proxy:
        assert proxy.stats()["workers"] == 2


def test_admin_address_is_the_bound_admin_server(upstreams: Upstreams) -> None:
    with meshproxy.Proxy(to(upstreams("v1"), admin={"address": "127.0.0.1:0"})) as proxy:
        admin = proxy.admin_address
        assert admin is not None and not admin.endswith(":0")
        with httpx.Client(timeout=10) as client:
            assert client.get(f"http://{admin}/ready").status_code == 200
    assert not accepts_connections(admin)
    with meshproxy.Proxy(to(upstreams("v1"))) as proxy:
        assert proxy.admin_address is None


def test_unknown_listener_name_raises_key_error_listing_the_listeners(upstreams: Upstreams) -> None:
    refused = pytest.raises(KeyError, match="no listener named 'inbound'; listeners: outbound")
    with meshproxy.Proxy(to(upstreams("v1"))) as proxy, refused:
        proxy.address("inbound")


# --- reload --------------------------------------------------------------------------------


def test_reload_changes_routing_and_returns_an_increasing_version(upstreams: Upstreams) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    with meshproxy.Proxy(to(v1)) as proxy:
        address = proxy.address("outbound")
        assert served_by(address) == "v1"

        assert proxy.reload(to(v2)) == 2
        assert served_by(address) == "v2"
        assert proxy.version == 2
        assert proxy.stats()["config_version"] == 2

        assert proxy.reload(to(v1)) == 3
        assert served_by(address) == "v1"
        # The listener kept its port across both reloads.
        assert proxy.address("outbound") == address


def test_invalid_reload_raises_config_error_and_the_old_route_keeps_serving(upstreams: Upstreams) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    with meshproxy.Proxy(to(v1)) as proxy:
        address = proxy.address("outbound")
        broken = one_route_config(cluster("app", v2), routes=[{"cluster": "canary"}])
        with pytest.raises(meshproxy.ConfigError) as error:
            proxy.reload(broken)
        assert str(error.value) == (
            "<dict>: listeners[0].routes[0].cluster: unknown cluster 'canary'; defined clusters: app"
        )
        assert served_by(address) == "v1"
        assert proxy.version == 1
        assert proxy.config.clusters[0].endpoints[0].address == v1.address


def test_reload_adding_a_listener_binds_it_and_removing_it_unbinds_it(upstreams: Upstreams) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    one = one_route_config(cluster("app", v1), cluster("other", v2))
    two = json.loads(json.dumps(one))
    two["listeners"].append({"name": "inbound", "address": "127.0.0.1:0", "routes": [{"cluster": "other"}]})
    with meshproxy.Proxy(one) as proxy:
        outbound = proxy.address("outbound")
        assert set(proxy.listeners()) == {"outbound"}

        assert proxy.reload(two) == 2
        assert set(proxy.listeners()) == {"outbound", "inbound"}
        inbound = proxy.address("inbound")
        assert served_by(inbound) == "v2"
        assert served_by(outbound) == "v1"

        assert proxy.reload(one) == 3
        assert set(proxy.listeners()) == {"outbound"}
        wait_unbound(inbound)
        assert served_by(outbound) == "v1"


def test_reload_moves_the_admin_server_to_a_changed_address(upstreams: Upstreams) -> None:
    v1 = upstreams("v1")
    with meshproxy.Proxy(to(v1, admin={"address": "127.0.0.1:0"})) as proxy, httpx.Client(timeout=10) as client:
        old = proxy.admin_address
        assert old is not None
        moved_to = closed_port_address()
        assert proxy.reload(to(v1, admin={"address": moved_to})) == 2
        assert proxy.admin_address == moved_to
        assert client.get(f"http://{moved_to}/config").json()["admin"] == {"address": moved_to}
        assert not accepts_connections(old)

        assert proxy.reload(to(v1)) == 3
        assert proxy.admin_address is None
        assert not accepts_connections(moved_to)


def test_reload_to_an_admin_address_in_use_is_refused_and_the_old_admin_stays(upstreams: Upstreams) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    with socket.socket() as taken, meshproxy.Proxy(to(v1, admin={"address": "127.0.0.1:0"})) as proxy:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        admin = proxy.admin_address
        with pytest.raises(OSError, match=f"^admin cannot bind {busy}: Address already in use"):
            proxy.reload(to(v2, admin={"address": busy}))
        assert proxy.version == 1
        assert proxy.admin_address == admin
        assert served_by(proxy.address("outbound")) == "v1"
        with httpx.Client(timeout=10) as client:
            assert client.get(f"http://{admin}/ready").status_code == 200


# --- stats ---------------------------------------------------------------------------------


def test_stats_shape(upstreams: Upstreams) -> None:
    responses = {"1xx", "2xx", "3xx", "4xx", "5xx"}
    with meshproxy.Proxy(to(upstreams("v1"))) as proxy:
        assert served_by(proxy.address("outbound")) == "v1"
        stats = proxy.stats()
    assert set(stats) == {"listeners", "clusters", "errors", "tls", "authorization", "traffic", "log_lines_dropped",
                          "access_log", "tracing", "config_version", "workers", "busy_poll", "reload_outcomes",
                          "route_rules"}
    assert (stats["access_log"], stats["tracing"]) == ({"lines": 0, "dropped": 0}, {"spans": 0, "dropped": 0})
    assert stats["config_version"] == 1
    assert stats["reload_outcomes"] == {"succeeded": 0, "failed": 0}
    assert isinstance(stats["workers"], int) and stats["workers"] >= 1

    assert set(stats["listeners"]) == {"outbound"}
    listener = stats["listeners"]["outbound"]
    assert set(listener) == {"connections_active", "connections_total", "requests_total", "responses", "direction",
                             "tcp_bytes_received_total", "tcp_bytes_sent_total",
                             "upgrades_total", "connects_total"}
    assert listener["direction"] == "outbound"
    assert set(listener["responses"]) == responses
    assert listener["requests_total"] == 1
    assert listener["responses"]["2xx"] == 1

    assert set(stats["clusters"]) == {"app"}
    app = stats["clusters"]["app"]
    assert set(app) == {"connect_failures_total", "responses", "timeouts_total", "upstream_failures_total",
                        "upstream_requests_total", "endpoint_updates_total", "health_check_failures_total",
                        "ejections_total", "pool", "endpoints", "retries_total",
                        "retry_budget_exhausted_total", "retry_overflow_total", "overflow_total",
                        "tcp_connections_total", "tcp_bytes_sent_total", "tcp_bytes_received_total",
                        "tunnels_total"}
    assert set(app["pool"]) == {"idle_http1", "http2_connections"}
    assert app["endpoints"] == {"healthy": 1, "unhealthy": 0, "ejected": 0}
    assert set(app["responses"]) == responses
    assert app["upstream_requests_total"] == 1

    assert set(stats["errors"]) == {"bad_request", "connect_failure", "no_healthy_endpoint", "no_route", "timeout",
                                    "upstream_failure", "denied", "overflow", "rate_limited", "fault_injected",
                                    "unsupported_transfer_coding", "connect_denied", "dns_failure", "drained",
                                    "upstream_protocol_error"}
    # Only routes and listeners with rules count there.
    assert stats["route_rules"] == []
    assert set(stats["tls"]) == {"inbound", "outbound"}
    assert set(stats["tls"]["inbound"]) == {"handshakes_total", "resumed_total", "refused"}
    assert stats["authorization"] == {}
    assert isinstance(stats["log_lines_dropped"], int)

    assert set(stats["traffic"]) == {"duration_buckets", "stats"}
    assert len(stats["traffic"]["duration_buckets"]) == 14
    # The listener's unrouted requests, made with the listener, and the route that was used.
    assert [(s["route"], s["cluster"]) for s in stats["traffic"]["stats"]] == [("", ""), ("outbound/0", "app")]
    routed = stats["traffic"]["stats"][1]
    assert set(routed) == {"direction", "listener", "route", "cluster", "responses", "duration_seconds",
                           "request_bytes", "response_bytes", "grpc"}
    assert routed["responses"] == {"200": 1}
    assert routed["duration_seconds"]["buckets"][-1] == 1


# --- typing --------------------------------------------------------------------------------


def test_native_stubs_match_the_native_module(tmp_path: Path) -> None:
    # Run from tmp_path: stubtest keeps its cache in the working directory.
    result = subprocess.run([sys.executable, "-m", "mypy.stubtest", "meshproxy._native"],
                            check=False, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_package_is_typed_for_its_users(tmp_path: Path) -> None:
    assert (PACKAGE_DIR / "py.typed").is_file()
    user = tmp_path / "user.py"
    user.write_text(
        "import meshproxy\n"
        "from meshproxy import _native\n"
        "proxy = meshproxy.Proxy('sidecar.yaml', workers=2)\n"
        "reveal_type(proxy.reload({'listeners': []}))\n"
        "reveal_type(proxy.listeners())\n"
        "reveal_type(proxy.admin_address)\n"
        "reveal_type(_native.Engine('{}').version)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), str(user)],
        check=False, capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.split("Revealed type is ", 1)[1] for line in result.stdout.splitlines() if "Revealed" in line] == [
        '"int"', '"dict[str, str]"', '"str | None"', '"int"',
    ]
