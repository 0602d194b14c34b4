"""The embedding API's lifecycle calls: ``reload()`` without a config (the file again), the
reload outcome counts, ``drain()``, and ``stop()`` draining inbound before outbound; against real
upstreams on loopback."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import meshproxy
import pytest
import yaml
from conftest import Upstream, accepts_connections, one_route_config, served_by, wait_until

Upstreams = Callable[[str], Upstream]


def to(upstream: Upstream) -> dict[str, Any]:
    return one_route_config({"name": "app", "endpoints": [{"address": upstream.address}]})


def inbound_and_outbound(inbound: Upstream, outbound: Upstream) -> dict[str, Any]:
    return {
        "listeners": [
            {"name": "inbound", "address": "127.0.0.1:0", "direction": "inbound", "routes": [{"cluster": "app"}]},
            {"name": "outbound", "address": "127.0.0.1:0", "routes": [{"cluster": "mesh"}]},
        ],
        "clusters": [
            {"name": "app", "endpoints": [{"address": inbound.address}]},
            {"name": "mesh", "endpoints": [{"address": outbound.address}]},
        ],
    }


# --- reload --------------------------------------------------------------------------------


def test_reload_without_a_config_reads_the_file_again_and_counts_each_outcome(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump(to(v1)))
    with meshproxy.Proxy(path) as proxy:
        address = proxy.address("outbound")
        assert proxy.reload_outcomes == {"succeeded": 0, "failed": 0}

        path.write_text(yaml.safe_dump(to(v2)))
        assert proxy.reload() == 2
        assert served_by(address) == "v2"

        path.write_text(yaml.safe_dump(one_route_config({"name": "app"}, routes=[{"cluster": "nope"}])))
        with pytest.raises(meshproxy.ConfigError, match="unknown cluster 'nope'"):
            proxy.reload()
        assert served_by(address) == "v2"

        assert proxy.reload(to(v1)) == 3
        assert proxy.reload_outcomes == {"succeeded": 2, "failed": 1}
        assert proxy.stats()["reload_outcomes"] == {"succeeded": 2, "failed": 1}


def test_reload_without_a_config_of_a_proxy_given_a_dict_raises_and_counts_nothing(upstreams: Upstreams) -> None:
    with meshproxy.Proxy(to(upstreams("v1"))) as proxy:
        with pytest.raises(RuntimeError, match="^nothing to reload from: the proxy was not given a file"):
            proxy.reload()
        assert proxy.reload_outcomes == {"succeeded": 0, "failed": 0}


def test_concurrent_reloads_run_one_at_a_time_each_reading_its_source_in_turn(upstreams: Upstreams) -> None:
    v1 = upstreams("v1")
    changed = threading.Condition()
    inside = [0]
    seen_inside: list[int] = []

    def source() -> dict[str, Any]:
        with changed:
            inside[0] += 1
            seen_inside.append(inside[0])
            changed.notify_all()
            # Linger a moment: a second reload reading its source meanwhile would show here.
            if changed.wait_for(lambda: inside[0] > 1, timeout=0.2):
                seen_inside.append(inside[0])
            inside[0] -= 1
        return to(v1)

    with meshproxy.Proxy(to(v1), source=source) as proxy:
        threads = [threading.Thread(target=proxy.reload) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert proxy.version == 5
    assert seen_inside == [1, 1, 1, 1]
    assert proxy.reload_outcomes == {"succeeded": 4, "failed": 0}


# --- drain and stop ------------------------------------------------------------------------


def test_drain_refuses_new_inbound_connections_and_keeps_outbound_serving(upstreams: Upstreams) -> None:
    app, mesh = upstreams("v1"), upstreams("v2")
    with meshproxy.Proxy(inbound_and_outbound(app, mesh)) as proxy:
        inbound, outbound = proxy.address("inbound"), proxy.address("outbound")
        assert served_by(inbound) == "v1"
        assert not proxy.draining

        proxy.drain()

        assert proxy.draining
        assert not accepts_connections(inbound)
        assert served_by(outbound) == "v2"
        # A reload while draining applies to outbound listeners and leaves inbound ones closed.
        changed = inbound_and_outbound(app, app)
        assert proxy.reload(changed) == 2
        assert set(proxy.listeners()) == {"outbound"}
        assert served_by(outbound) == "v1"
        assert not accepts_connections(inbound)
        proxy.drain()  # idempotent
    assert not proxy.running


def test_stop_lets_inbound_requests_finish_while_outbound_keeps_serving(upstreams: Upstreams) -> None:
    app, mesh = upstreams("v1"), upstreams("v2")
    proxy = meshproxy.Proxy(inbound_and_outbound(app, mesh), drain_timeout=20).start()
    inbound, outbound = proxy.address("inbound"), proxy.address("outbound")
    slow: list[httpx.Response] = []
    request = threading.Thread(target=lambda: slow.append(httpx.get(f"http://{inbound}/delay/3000", timeout=30)))
    request.start()
    wait_until(lambda: proxy.clusters()["app"]["endpoints"][0]["in_flight"] == 1, timeout=10,
               what="the inbound request to reach the app")
    stopping = threading.Thread(target=proxy.stop)
    stopping.start()
    wait_until(lambda: proxy.draining, timeout=10, what="the drain to start")

    assert not accepts_connections(inbound)
    # The app's own call out, made while its inbound request is still being answered.
    assert served_by(outbound) == "v2"
    assert not slow, "the outbound request was served during the drain"

    stopping.join(timeout=30)
    request.join(timeout=30)
    assert (slow[0].status_code, slow[0].json()["upstream"]) == (200, "v1")
    assert not proxy.running
    assert not accepts_connections(outbound)


def test_post_reload_of_an_embedded_proxy_reads_its_file_or_says_it_has_none(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    admin = {"address": "127.0.0.1:0"}
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump({**to(v1), "admin": admin}))
    with meshproxy.Proxy(path) as from_file, meshproxy.Proxy({**to(v1), "admin": admin}) as from_dict:
        path.write_text(yaml.safe_dump({**to(v2), "admin": admin}))
        with httpx.Client(timeout=30) as client:
            reloaded = client.post(f"http://{from_file.admin_address}/reload")
            refused = client.post(f"http://{from_dict.admin_address}/reload")
        assert (reloaded.status_code, reloaded.json()) == (200, {"config_version": 2})
        assert served_by(from_file.address("outbound")) == "v2"
        assert refused.status_code == 409
        assert refused.text.startswith("nothing to reload from: the proxy was not given a file")
        assert from_dict.reload_outcomes == {"succeeded": 0, "failed": 0}
