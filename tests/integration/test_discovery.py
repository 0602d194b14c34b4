"""Endpoint discovery with real parts: endpoint files rewritten while the proxy runs, a real DNS
server (dnsmasq) on loopback whose records change, real upstreams, and the sidecar process."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import ProxyProcess, Upstream, body_json, occupied_address, served_by, start_upstream, wait_until
from dnsmasq import DOMAIN, Dnsmasq
from meshproxy import Proxy
from procfs import mapped_files

Upstreams = Callable[[str], Upstream]


def replace_file(path: Path, text: str) -> None:
    """Writes ``path`` the way deployment tools do: a new file renamed over the old one."""
    new = path.with_name(path.name + ".new")
    new.write_text(text)
    os.replace(new, path)


def endpoint_file(path: Path, *entries: tuple[Upstream, int] | Upstream) -> Path:
    items = [{"address": e.address} if isinstance(e, Upstream) else {"address": e[0].address, "weight": e[1]}
             for e in entries]
    replace_file(path, yaml.safe_dump(items))
    return path


def config_with(discovery: dict[str, Any], *, admin: bool = False) -> dict[str, Any]:
    return {
        **({"admin": {"address": "127.0.0.1:0"}} if admin else {}),
        "listeners": [{"name": "outbound", "address": "127.0.0.1:0", "routes": [{"cluster": "app"}]}],
        "clusters": [{"name": "app", "lb": "round_robin", "discovery": discovery}],
    }


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def discovered(proxy: Proxy, cluster: str = "app") -> list[tuple[str, int]]:
    """The endpoints the engine runs for ``cluster``, from the document it was given."""
    document = json.loads(proxy.document.engine_json)
    [found] = [c for c in document["clusters"] if c["name"] == cluster]
    return [(e["address"], e["weight"]) for e in found["endpoints"]]


def updates(proxy: Proxy, cluster: str = "app") -> int:
    """Endpoint lists discovery handed the engine for ``cluster`` between configs."""
    count: int = proxy.stats()["clusters"][cluster]["endpoint_updates_total"]
    return count


# === file sources ===


def test_a_file_source_reads_its_file_beside_the_config_and_follows_replacements(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    endpoint_file(tmp_path / "app-endpoints.yaml", v1)
    config = write_config(tmp_path / "sidecar.yaml", config_with({"type": "file", "path": "app-endpoints.yaml"}))
    with Proxy(config) as proxy:
        address = proxy.address("outbound")
        assert served_by(address) == "v1"
        assert discovered(proxy) == [(v1.address, 1)]

        endpoint_file(tmp_path / "app-endpoints.yaml", (v2, 3))
        wait_until(lambda: served_by(address) == "v2", what="requests to reach the endpoint the file lists now")
        assert discovered(proxy) == [(v2.address, 3)]
        assert {served_by(address) for _ in range(10)} == {"v2"}

        # Again: this change surely comes after the watch began.
        endpoint_file(tmp_path / "app-endpoints.yaml", v1)
        wait_until(lambda: served_by(address) == "v1", what="requests to follow the second change")


def test_a_json_endpoint_file_is_read_as_json(tmp_path: Path, upstreams: Upstreams) -> None:
    v1 = upstreams("v1")
    (tmp_path / "endpoints.json").write_text(json.dumps([{"address": v1.address, "weight": 2}]))
    with Proxy(config_with({"type": "file", "path": str(tmp_path / "endpoints.json")})) as proxy:
        assert served_by(proxy.address("outbound")) == "v1"
        assert discovered(proxy) == [(v1.address, 2)]


def test_a_file_published_by_a_symlink_swap_is_followed(tmp_path: Path, upstreams: Upstreams) -> None:
    """As Kubernetes updates a mounted ConfigMap: the file is a symlink through ``..data``, and an
    update points ``..data`` at a new folder (a rename), leaving the file's own link untouched."""
    v1, v2 = upstreams("v1"), upstreams("v2")
    (tmp_path / "..data").symlink_to("..0")
    (tmp_path / "endpoints.yaml").symlink_to("..data/endpoints.yaml")
    for version, upstream in enumerate((v1, v2, v1)):
        (tmp_path / f"..{version}").mkdir()
        endpoint_file(tmp_path / f"..{version}" / "endpoints.yaml", upstream)
    with Proxy(config_with({"type": "file", "path": str(tmp_path / "endpoints.yaml")})) as proxy:
        address = proxy.address("outbound")
        assert served_by(address) == "v1"
        # Twice: the second swap surely comes after the watch began.
        for version, upstream in ((1, "v2"), (2, "v1")):
            (tmp_path / "..data_tmp").symlink_to(f"..{version}")
            os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
            wait_until(lambda: served_by(address) == upstream, what="requests to follow the swapped folder")


def test_a_broken_or_missing_file_keeps_the_last_good_list_and_says_why(
    tmp_path: Path, upstreams: Upstreams, caplog: pytest.LogCaptureFixture
) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    path = endpoint_file(tmp_path / "endpoints.yaml", v1)
    caplog.set_level(logging.INFO, logger="meshproxy")
    with Proxy(config_with({"type": "file", "path": str(path)})) as proxy:
        address = proxy.address("outbound")

        replace_file(path, f"- {{address: {v2.address}}}\n- {{address: 'orders:99999'}}\n")
        problem = (f"cluster app: endpoint file {path} refused, keeping the last good list: [1].address: "
                   "'orders:99999' is not a valid address; expected a port from 1 to 65535 after the colon")
        wait_until(lambda: problem in caplog.messages, what="the refusal to be logged")
        assert served_by(address) == "v1"

        path.unlink()
        wait_until(lambda: any("cannot read it" in m for m in caplog.messages), what="the missing file to be logged")
        assert served_by(address) == "v1"
        assert discovered(proxy) == [(v1.address, 1)]

        endpoint_file(path, v2)
        wait_until(lambda: served_by(address) == "v2", what="the next good file to apply")


def test_a_request_in_flight_finishes_when_its_endpoint_is_removed(tmp_path: Path, upstreams: Upstreams) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    path = endpoint_file(tmp_path / "endpoints.yaml", v1)
    with Proxy(config_with({"type": "file", "path": str(path)})) as proxy:
        base = f"http://{proxy.address('outbound')}"
        slow: list[httpx.Response] = []
        request = threading.Thread(target=lambda: slow.append(httpx.get(f"{base}/delay/1500", timeout=10)))
        request.start()
        wait_until(lambda: proxy.stats()["clusters"]["app"]["upstream_requests_total"] == 1,
                   what="the slow request to reach v1")

        endpoint_file(path, v2)
        wait_until(lambda: discovered(proxy) == [(v2.address, 1)], what="the update to apply")
        assert served_by(proxy.address("outbound")) == "v2"
        request.join()
    assert slow[0].status_code == 200
    assert body_json(slow[0])["upstream"] == "v1"


def test_a_pooled_connection_to_an_endpoint_that_stays_is_reused_after_an_update(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    path = endpoint_file(tmp_path / "endpoints.yaml", v1)
    # One worker, so every request uses the one pool of v1's connections.
    with Proxy(config_with({"type": "file", "path": str(path)}, admin=True), workers=1) as proxy, \
            httpx.Client(base_url=f"http://{proxy.address('outbound')}", timeout=10) as client:
        before = body_json(client.get("/anything"))
        version = proxy.version

        # v1 stays (with a new weight); v2 comes, never picked.
        endpoint_file(path, (v1, 5), (v2, 0))
        wait_until(lambda: updates(proxy) == 1, what="the update to apply")
        after = body_json(client.get("/anything"))
        # The update went to the one cluster alone: no new config.
        assert proxy.version == version
        admin = f"http://{proxy.admin_address}"
        clusters = httpx.get(f"{admin}/clusters", timeout=10).json()
        config = httpx.get(f"{admin}/config", timeout=10).json()
        metrics = httpx.get(f"{admin}/metrics", timeout=10).text
    assert (before["upstream"], after["upstream"]) == ("v1", "v1")
    assert after["client_port"] == before["client_port"]
    expected = [(v1.address, 5), (v2.address, 0)]
    assert [(e["address"], e["weight"]) for e in clusters["app"]["endpoints"]] == expected
    [app] = [c for c in config["clusters"] if c["name"] == "app"]
    assert [(e["address"], e["weight"]) for e in app["endpoints"]] == expected
    assert 'meshproxy_cluster_endpoint_updates_total{cluster="app"} 1.0' in metrics.splitlines()


def test_a_reload_after_an_update_keeps_the_discovered_list(tmp_path: Path, upstreams: Upstreams) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    path = endpoint_file(tmp_path / "endpoints.yaml", v1)
    config = config_with({"type": "file", "path": str(path)})
    with Proxy(config) as proxy:
        address = proxy.address("outbound")
        endpoint_file(path, (v2, 2))
        wait_until(lambda: updates(proxy) == 1, what="the update to apply")

        config["clusters"][0]["lb"] = "random"
        assert proxy.reload(config) == 2
        assert {served_by(address) for _ in range(5)} == {"v2"}
        assert discovered(proxy) == [(v2.address, 2)]
        assert proxy.clusters()["app"]["lb"] == "random"

        # The source carries on after the reload, one update at a time.
        endpoint_file(path, v1)
        wait_until(lambda: updates(proxy) == 2, what="the next update to apply")
        assert served_by(address) == "v1"
        assert proxy.version == 2


def test_a_reload_keeps_the_list_of_an_unchanged_source_and_restarts_a_changed_one(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    first = endpoint_file(tmp_path / "first.yaml", v1)
    second = endpoint_file(tmp_path / "second.yaml", v2)
    config = config_with({"type": "file", "path": str(first)})
    with Proxy(config) as proxy:
        address = proxy.address("outbound")
        config["clusters"][0]["lb"] = "random"
        proxy.reload(config)
        # The list came along with the reload: no moment without endpoints.
        assert served_by(address) == "v1"

        config["clusters"][0]["discovery"]["path"] = str(second)
        proxy.reload(config)
        # A new source made its first read before the reload returned.
        assert served_by(address) == "v2"
        assert discovered(proxy) == [(v2.address, 1)]


def test_a_refused_reload_stops_the_sources_it_started_and_the_running_ones_carry_on(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    v1, v2, v3 = upstreams("v1"), upstreams("v2"), upstreams("v3")
    first = endpoint_file(tmp_path / "first.yaml", v1)
    second = endpoint_file(tmp_path / "second.yaml", v2)
    with Proxy(config_with({"type": "file", "path": str(first)})) as proxy, occupied_address() as taken:
        address = proxy.address("outbound")
        refused = config_with({"type": "file", "path": str(second)})
        refused["listeners"].append({"name": "taken", "address": taken})
        with pytest.raises(OSError, match=taken):
            proxy.reload(refused)
        assert served_by(address) == "v1"

        endpoint_file(first, v3)
        wait_until(lambda: served_by(address) == "v3", what="the running source to keep following its file")


# === DNS sources ===


@pytest.fixture
def dns_server(tmp_path: Path) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def loopback_pair() -> Iterator[tuple[Upstream, Upstream]]:
    """Upstreams on 127.0.0.2 and 127.0.0.3 (Linux routes all of 127/8 to loopback) on one
    port, as two hosts behind one name would be."""
    first = start_upstream("at-2", host="127.0.0.2")
    port = int(first.address.rsplit(":", 1)[1])
    second = start_upstream("at-3", host="127.0.0.3", port=port)
    yield first, second
    first.stop()
    second.stop()


def dns_config(server: Dnsmasq, name: str, **settings: Any) -> dict[str, Any]:
    return config_with({"type": "dns", "name": name, "resolver": server.address, **settings})


def test_a_records_are_followed_once_their_ttl_runs_out(
    dns_server: Dnsmasq, loopback_pair: tuple[Upstream, Upstream]
) -> None:
    at2, at3 = loopback_pair
    port = int(at2.address.rsplit(":", 1)[1])
    dns_server.set_hosts(f"127.0.0.2 orders.{DOMAIN}")
    with Proxy(dns_config(dns_server, f"orders.{DOMAIN}", port=port)) as proxy:
        address = proxy.address("outbound")
        assert served_by(address) == "at-2"

        dns_server.set_hosts(f"127.0.0.3 orders.{DOMAIN}")
        wait_until(lambda: served_by(address) == "at-3", what="requests to follow the new A record")

        dns_server.set_hosts(f"127.0.0.2 orders.{DOMAIN}", f"127.0.0.3 orders.{DOMAIN}")
        wait_until(lambda: len(discovered(proxy)) == 2, what="both A records")
        assert discovered(proxy) == [(at2.address, 1), (at3.address, 1)]
        assert {served_by(address) for _ in range(10)} == {"at-2", "at-3"}  # round robin


def ipv6_loopback() -> bool:
    """Whether this machine can listen on ::1 (a container may run without IPv6)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine to run an upstream on")
def test_aaaa_records_lead_to_an_upstream_on_ipv6_loopback(tmp_path: Path) -> None:
    upstream = start_upstream("v6", host="::1")
    # The name has an IPv4 address too: an AAAA query must give only the IPv6 one.
    server = Dnsmasq(tmp_path, host_records=[f"orders.{DOMAIN},127.0.0.1,::1"]).start()
    try:
        port = int(upstream.address.rsplit(":", 1)[1])
        with Proxy(dns_config(server, f"orders.{DOMAIN}", record="AAAA", port=port)) as proxy:
            assert upstream.address == f"[::1]:{port}"
            assert discovered(proxy) == [(upstream.address, 1)]
            assert {served_by(proxy.address("outbound")) for _ in range(3)} == {"v6"}
    finally:
        server.stop()
        upstream.stop()


def test_srv_records_give_the_ports_and_weights_of_the_lowest_priority(
    tmp_path: Path, upstreams: Upstreams
) -> None:
    v1, v2, v3 = upstreams("v1"), upstreams("v2"), upstreams("v3")
    port = {u.name: int(u.address.rsplit(":", 1)[1]) for u in (v1, v2, v3)}
    service = f"_http._tcp.orders.{DOMAIN}"
    server = Dnsmasq(
        tmp_path,
        srv=[f"{service},v1.{DOMAIN},{port['v1']},0,5",
             f"{service},v2.{DOMAIN},{port['v2']},0,0",     # weight 0 beside weight 5: never picked
             f"{service},v3.{DOMAIN},{port['v3']},1,100"],  # a higher priority number: a fallback, unused
        host_records=[f"v1.{DOMAIN},127.0.0.1", f"v2.{DOMAIN},127.0.0.1", f"v3.{DOMAIN},127.0.0.1"],
    ).start()
    try:
        with Proxy(dns_config(server, service, record="SRV")) as proxy:
            assert sorted(discovered(proxy)) == sorted([(v1.address, 5), (v2.address, 0)])
            assert {served_by(proxy.address("outbound")) for _ in range(10)} == {"v1"}
    finally:
        server.stop()


def test_srv_records_all_of_weight_0_share_evenly(tmp_path: Path, upstreams: Upstreams) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    service = f"_http._tcp.orders.{DOMAIN}"
    server = Dnsmasq(
        tmp_path,
        srv=[f"{service},v1.{DOMAIN},{v1.address.rsplit(':', 1)[1]},0,0",
             f"{service},v2.{DOMAIN},{v2.address.rsplit(':', 1)[1]},0,0"],
        host_records=[f"v1.{DOMAIN},127.0.0.1", f"v2.{DOMAIN},127.0.0.1"],
    ).start()
    try:
        with Proxy(dns_config(server, service, record="SRV")) as proxy:
            assert sorted(discovered(proxy)) == sorted([(v1.address, 1), (v2.address, 1)])
            assert {served_by(proxy.address("outbound")) for _ in range(10)} == {"v1", "v2"}  # round robin
    finally:
        server.stop()


def test_a_dns_that_stops_answering_keeps_the_last_list(
    dns_server: Dnsmasq, loopback_pair: tuple[Upstream, Upstream], caplog: pytest.LogCaptureFixture
) -> None:
    at2, _ = loopback_pair
    dns_server.set_hosts(f"127.0.0.2 orders.{DOMAIN}")
    caplog.set_level(logging.INFO, logger="meshproxy")
    with Proxy(dns_config(dns_server, f"orders.{DOMAIN}", port=int(at2.address.rsplit(":", 1)[1]))) as proxy:
        dns_server.stop()
        wait_until(lambda: any("keeping the last list until it answers" in m for m in caplog.messages),
                   what="the silent DNS to be logged")
        assert served_by(proxy.address("outbound")) == "at-2"
        assert discovered(proxy) == [(at2.address, 1)]


def test_a_name_without_records_leaves_the_cluster_without_endpoints(
    dns_server: Dnsmasq, loopback_pair: tuple[Upstream, Upstream]
) -> None:
    at2, _ = loopback_pair
    dns_server.set_hosts(f"127.0.0.2 orders.{DOMAIN}")
    with Proxy(dns_config(dns_server, f"orders.{DOMAIN}", port=int(at2.address.rsplit(":", 1)[1]))) as proxy:
        url = f"http://{proxy.address('outbound')}/anything"
        dns_server.set_hosts()  # the name is gone: NXDOMAIN
        wait_until(lambda: httpx.get(url, timeout=10).status_code == 503, what="the cluster to lose its endpoint")
        assert httpx.get(url, timeout=10).headers["x-meshproxy-error"] == "no_healthy_endpoint"


# === the sidecar ===


def test_the_sidecar_runs_discovery_without_the_config_schema_and_restarts_changed_sources_on_sighup(
    tmp_path: Path, meshproxy_run: Callable[..., ProxyProcess], upstreams: Upstreams,
    dns_server: Dnsmasq, loopback_pair: tuple[Upstream, Upstream],
) -> None:
    v1, v2 = upstreams("v1"), upstreams("v2")
    at2, _ = loopback_pair
    dns_server.set_hosts(f"127.0.0.2 orders.{DOMAIN}")
    endpoint_file(tmp_path / "endpoints.yaml", v1)
    config = config_with({"type": "file", "path": "endpoints.yaml"})
    config["listeners"][0]["routes"] = [{"match": {"host": "orders"}, "cluster": "orders"}, {"cluster": "app"}]
    config["clusters"].append({"name": "orders", "discovery": {
        "type": "dns", "name": f"orders.{DOMAIN}", "port": int(at2.address.rsplit(":", 1)[1]),
        "resolver": dns_server.address}})
    path = write_config(tmp_path / "sidecar.yaml", config)
    proxy = meshproxy_run(path)
    address = proxy.address("outbound")
    assert served_by(address) == "v1"
    with httpx.Client(timeout=10) as client:
        assert body_json(client.get(f"http://{address}/anything", headers={"host": "orders"}))["upstream"] == "at-2"

    endpoint_file(tmp_path / "endpoints.yaml", v2)
    wait_until(lambda: served_by(address) == "v2", what="the sidecar to follow the file")
    assert f"meshproxy: cluster app: 1 endpoint from file {tmp_path}/endpoints.yaml: {v2.address}\n" in proxy.log_lines

    endpoint_file(tmp_path / "other.yaml", v1)
    config["clusters"][0]["discovery"]["path"] = "other.yaml"
    write_config(path, config)
    proxy.process.send_signal(signal.SIGHUP)
    wait_until(lambda: any("reloaded" in line for line in proxy.log_lines), what="the reload")
    assert served_by(address) == "v1"

    mapped = mapped_files(proxy.process.pid)
    assert any(Path(file).name.startswith("_rust_notify") for file in mapped), mapped  # watchfiles: maps are read
    assert [file for file in mapped if "pydantic" in file] == []
    assert proxy.stop() == 0
